"""Attention thresholding in padded batches and the fallback count of the fold history, pinned
(mutants of ``models/base.py`` that survived the first mutation run, 2026-12-01)."""

from __future__ import annotations

import pytest
import torch

from histomil.models import create_model
from histomil.models.base import _threshold


def test_padded_batch_thresholds_each_bag_like_the_bag_alone():
    """k in T/k is each bag's own number of real instances, not the padded length."""
    torch.manual_seed(0)
    scores = torch.randn(2, 5, 1)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    got, fallback = _threshold(scores, mask, 0.9)
    for b, n in ((0, 5), (1, 3)):
        alone, _ = _threshold(scores[b : b + 1, :n], None, 0.9)
        assert torch.allclose(got[b, :n], alone[0], atol=1e-6)
        assert torch.all(got[b, n:] == 0)
    assert fallback.shape == (2, 1)


def _abmil_with_threshold(t: float):
    model = create_model("abmil", in_dim=4, n_classes=2, attention_threshold=t)
    model.train()
    return model


def test_fallback_events_count_bags_with_any_branch_suppressed_and_accumulate():
    """Two branches (R = 2): a bag counts once when any branch fell back to plain softmax; the
    count accumulates over calls as a tensor, and nothing is counted at evaluation."""
    model = _abmil_with_threshold(2.0)  # T = 2, N = 4: keep weights above 0.5
    uniform = torch.zeros(4)  # every weight 0.25 -> all suppressed -> fallback
    peaked = torch.tensor([10.0, 0.0, 0.0, 0.0])  # one weight ~1 survives
    scores = torch.stack(
        [
            torch.stack([uniform, peaked], dim=-1),  # bag 0: branch 0 falls back
            torch.stack([peaked, peaked], dim=-1),  # bag 1: no fallback
            torch.stack([uniform, uniform], dim=-1),  # bag 2: both fall back (counts once)
        ]
    )  # (3, 4, 2)
    assert model.fallback_events is None
    model.pool_weights(scores, None)
    assert torch.is_tensor(model.fallback_events) and int(model.fallback_events) == 2
    model.pool_weights(scores[:1], None)
    assert int(model.fallback_events) == 3
    model.eval()
    model.pool_weights(scores, None)
    assert int(model.fallback_events) == 3


def test_no_threshold_counts_nothing():
    model = _abmil_with_threshold(0.0)
    model.pool_weights(torch.zeros(2, 4, 1), None)
    assert model.fallback_events is None


@pytest.mark.parametrize("t", [0.5, 1.0])
def test_threshold_weights_sum_to_one_per_bag_and_branch(t):
    torch.manual_seed(1)
    scores = torch.randn(3, 6, 2)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    weights, _ = _threshold(scores, mask, t)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3, 2), atol=1e-5)


def test_model_pool_weights_use_the_mask_of_a_padded_batch():
    model = _abmil_with_threshold(0.9)
    torch.manual_seed(2)
    scores = torch.randn(2, 5, 1)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    got = model.pool_weights(scores, mask)
    alone = model.pool_weights(scores[1:, :2], None)
    assert torch.allclose(got[1, :2], alone[0], atol=1e-6)
    assert torch.all(got[1, 2:] == 0)


def test_empty_bag_error_names_the_problem():
    from histomil.models.base import batchify

    with pytest.raises(ValueError, match=r"^empty bag: features have 0 instances$"):
        batchify(torch.zeros(0, 4))


def test_threshold_attention_uses_the_given_eps():
    """a_k = max(a~_k - T/K, 0) / (sum + eps) with the caller's eps (here large enough to see)."""
    from histomil.models.base import threshold_attention

    scores = torch.log(torch.tensor([0.5, 0.3, 0.2]))[None, :, None]  # softmax = themselves
    kept = [0.5 - 0.3 / 3, 0.3 - 0.1, 0.2 - 0.1]  # T = 0.3, K = 3
    got = threshold_attention(scores, None, 0.3, eps=0.5)[0, :, 0]
    want = [v / (sum(kept) + 0.5) for v in kept]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
