"""Rank-loss details the brute-force tests in test_rank.py leave open (found by mutation testing):
the documented defaults, the author-code option with a margin, the sampling order and the
error message."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from histomil.objectives.rank import rank_loss


def test_documented_defaults():
    params = inspect.signature(rank_loss).parameters
    defaults = {k: p.default for k, p in params.items() if k not in ("scores", "labels")}
    assert defaults == {
        "sigma": 1.0,
        "margin": 1.0,
        "max_pos": 1024,
        "max_neg": 1024,
        "generator": None,
        "drop_margin": False,
        "include_equal_pairs": False,
    }


def test_default_caps_sample_1024_of_each_side():
    """1025 lesion patches: the default cap drops exactly one, which changes the mean."""
    scores = torch.cat([torch.full((1024,), 3.0), torch.tensor([-5.0]), torch.zeros(2)])
    labels = torch.tensor([1] * 1025 + [0, 0])
    g = torch.Generator().manual_seed(0)
    got = rank_loss(scores, labels, generator=g)
    keep = torch.randperm(1025, generator=torch.Generator().manual_seed(0))[:1024]
    pos = scores[:1025][keep]
    want = -torch.nn.functional.logsigmoid(pos[:, None] - torch.zeros(2)[None] - 1.0).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    everything = rank_loss(scores, labels, max_pos=None)
    assert got.item() != pytest.approx(everything.item(), rel=1e-6)


def test_default_cap_of_non_lesion_patches_is_1024():
    """1025 non-lesion patches: the default cap drops exactly one (the signature's default is not
    enough: a wrapper can keep the signature while the body uses another number)."""
    scores = torch.cat([torch.tensor([1.0, 0.5]), torch.zeros(1024), torch.tensor([4.0])])
    labels = torch.tensor([1, 1] + [0] * 1025)
    got = rank_loss(scores, labels, generator=torch.Generator().manual_seed(3))
    keep = torch.randperm(1025, generator=torch.Generator().manual_seed(3))[:1024]
    neg = scores[2:][keep]
    want = -torch.nn.functional.logsigmoid(scores[:2, None] - neg[None] - 1.0).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    everything = rank_loss(scores, labels, max_neg=None)
    assert got.item() != pytest.approx(everything.item(), rel=1e-6)


def test_a_side_at_its_cap_is_not_resampled():
    """Exactly ``max_pos`` lesion patches: all are used and the generator is left for the
    non-lesion sample (so the same seed gives the same non-lesion patches)."""
    scores = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.3, 0.9, -0.2, 1.7])
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    got = rank_loss(
        scores, labels, max_pos=3, max_neg=2, generator=torch.Generator().manual_seed(4)
    )
    neg = torch.randperm(5, generator=torch.Generator().manual_seed(4))[:2] + 3
    want = -torch.nn.functional.logsigmoid(scores[:3, None] - scores[neg][None] - 1.0).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_author_option_with_a_margin_by_hand():
    """include_equal_pairs with margin 0.5 and sigma 2 (a margin makes the 1/2 targets matter)."""
    s = [1.0, 0.0, 0.2, -0.4]
    y = [1, 0, 0, 1]
    got = rank_loss(
        torch.tensor(s),
        torch.tensor(y),
        sigma=2.0,
        margin=0.5,
        include_equal_pairs=True,
        max_pos=None,
        max_neg=None,
    )
    # known patches are ordered lesions first: (0, 3, 1, 2)
    total = 0.0
    for i in range(4):
        for j in range(4):
            p = 1 / (1 + math.exp(-2.0 * (s[i] - s[j] - 0.5)))
            t = 1.0 if y[i] > y[j] else 0.5 if y[i] == y[j] else 0.0
            total += -(t * math.log(p) + (1 - t) * math.log(1 - p))
    assert got.item() == pytest.approx(total / 16, rel=1e-5)


def test_shape_mismatch_message():
    with pytest.raises(ValueError, match=r"^scores \(3,\) and labels \(2,\) differ$"):
        rank_loss(torch.zeros(3), torch.zeros(2))
