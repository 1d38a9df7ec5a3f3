"""Attention thresholding (rank-induction paper, Eq. 3-4) shared by every attention-pooling model."""

from __future__ import annotations

import math

import pytest
import torch

from histomil.models import create_model, masked_softmax, names, threshold_attention

D = 12
SMALL = {
    "abmil": {"hidden": 8, "attn_dim": 4},
    "clam_sb": {"hidden": 8, "attn_dim": 4},
    "clam_mb": {"hidden": 8, "attn_dim": 4},
    "dsmil": {"hidden": 8, "q_dim": 4},
    "dtfd": {"hidden": 8, "attn_dim": 4, "n_groups": 1},
    "hipt": {"hidden": 8, "heads": 2, "region_size": 4, "local_layers": 1},
}
THRESHOLDED = sorted(SMALL)
REJECTING = ["max", "mean", "transmil"]


def test_every_model_is_classified() -> None:
    assert sorted(THRESHOLDED + REJECTING) == names()


def test_formula_on_hand_computed_example() -> None:
    # softmax -> (0.5, 0.3, 0.2); T = 0.6, K = 3 -> subtract 0.2 -> (0.3, 0.1, 0) -> (0.75, 0.25, 0)
    scores = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.9])).view(1, 4, 1)
    mask = torch.tensor([[True, True, True, False]])  # the padded 4th instance does not count in K
    w = threshold_attention(scores, mask, 0.6)
    torch.testing.assert_close(w[0, :, 0], torch.tensor([0.75, 0.25, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_zero_threshold_is_plain_softmax() -> None:
    scores = torch.randn(2, 7, 3)
    mask = torch.rand(2, 7) > 0.3
    mask[:, 0] = True
    torch.testing.assert_close(threshold_attention(scores, mask, 0.0), masked_softmax(scores, mask))


def test_all_suppressed_falls_back_to_softmax() -> None:
    scores = torch.zeros(1, 4, 1)  # uniform 0.25 each; T = 1 removes 1/4 from each -> nothing left
    w = threshold_attention(scores, None, 1.0)
    torch.testing.assert_close(w, torch.full((1, 4, 1), 0.25))
    assert torch.isfinite(w).all()


def test_large_threshold_keeps_only_the_top_instance() -> None:
    scores = torch.tensor([[[3.0], [1.0], [0.0], [-1.0]]])
    w = threshold_attention(scores, None, 2.0)  # T/K = 0.5; only the top softmax weight exceeds it
    assert w[0, 0, 0] == pytest.approx(1.0) and w[0, 1:].sum() == 0


def _coords(n: int) -> torch.Tensor:
    idx = torch.arange(n)
    return torch.stack([idx % 6, idx // 6], -1).float() * 256


@pytest.mark.parametrize("name", THRESHOLDED)
def test_threshold_applies_to_every_attention_model(name: str) -> None:
    torch.manual_seed(0)
    x, coords = torch.randn(1, 30, D), _coords(30)[None]
    plain = create_model(name, D, 1, **SMALL[name]).eval()
    cut = create_model(name, D, 1, attention_threshold=1.0, **SMALL[name]).eval()
    cut.load_state_dict(plain.state_dict())
    a = plain(x, coords=coords)
    b = cut(x, coords=coords)
    torch.testing.assert_close(a.scores, b.scores)  # same weights, same raw scores
    assert (b.weights == 0).sum() > (a.weights == 0).sum()  # thresholding zeroes weights
    assert not torch.allclose(a.logits, b.logits)
    torch.testing.assert_close(b.weights.sum(1), torch.ones_like(b.weights.sum(1)))


@pytest.mark.parametrize("name", ["abmil", "clam_sb", "dsmil"])
def test_zero_threshold_pools_with_plain_softmax(name: str) -> None:
    torch.manual_seed(1)
    model = create_model(name, D, 1, **SMALL[name]).eval()
    out = model(torch.randn(20, D))
    torch.testing.assert_close(out.weights, masked_softmax(out.scores, None))


def test_threshold_at_eval_switch() -> None:
    torch.manual_seed(0)
    model = create_model("abmil", D, 1, attention_threshold=1.0, threshold_at_eval=False)
    model.eval()
    out = model(torch.randn(25, D))
    torch.testing.assert_close(out.weights, masked_softmax(out.scores, None))
    model.train()
    out = model(torch.randn(25, D))
    assert (out.weights == 0).any()


@pytest.mark.parametrize("name", REJECTING)
def test_models_without_instance_softmax_reject_threshold(name: str) -> None:
    with pytest.raises(ValueError, match="attention_threshold"):
        create_model(name, D, 1, attention_threshold=0.5)


def test_abmil_embedding_is_the_weighted_sum() -> None:
    torch.manual_seed(2)
    model = create_model("abmil", D, 2, hidden=8, attn_dim=4, attention_threshold=0.5).eval()
    x = torch.randn(1, 9, D)
    out = model(x)
    h = model.project(x)
    torch.testing.assert_close(out.embedding, (out.weights * h).sum(1))
    assert math.isclose(float(out.weights.detach().sum()), 1.0, rel_tol=1e-5)
