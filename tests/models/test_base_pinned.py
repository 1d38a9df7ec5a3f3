"""Pinned model contract helpers: masked softmax, attention thresholding (Eq. 3-4) and batching,
by hand on small numbers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from histomil.models.base import (
    MILModel,
    MILOutput,
    batchify,
    masked_softmax,
    threshold_attention,
)


def _softmax(v: list[float]) -> list[float]:
    z = sum(math.exp(x) for x in v)
    return [math.exp(x) / z for x in v]


def test_masked_softmax_by_hand():
    s = torch.tensor([[[1.0], [2.0], [0.5], [9.0]]])  # (1, 4, 1)
    mask = torch.tensor([[True, True, True, False]])
    got = masked_softmax(s, mask)[0, :, 0].tolist()
    assert got == pytest.approx([*_softmax([1.0, 2.0, 0.5]), 0.0])
    assert masked_softmax(s, None)[0, :, 0].tolist() == pytest.approx(_softmax([1, 2, 0.5, 9]))
    none = masked_softmax(s, torch.zeros(1, 4, dtype=torch.bool))
    assert none.tolist() == [[[0.0], [0.0], [0.0], [0.0]]]  # all masked: zeros, not NaN
    half = masked_softmax(s.to(torch.bfloat16), mask)
    assert half.dtype == torch.float32
    # softmax over another dim
    other = masked_softmax(torch.tensor([[1.0, 2.0]]), None, dim=-1)
    assert other[0].tolist() == pytest.approx(_softmax([1.0, 2.0]))


def test_threshold_attention_by_hand():
    s = [2.0, 1.0, 0.0, -1.0]
    a = _softmax(s)
    t = 1.0  # T / K = 0.25
    kept = [max(x - t / 4, 0.0) for x in a]
    want = [k / (sum(kept) + 1e-8) for k in kept]
    got = threshold_attention(torch.tensor(s)[None, :, None], None, t)[0, :, 0]
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    assert kept[2] == 0.0 and kept[3] == 0.0
    # K counts only real instances: with the last one masked, T / K = 1 / 3
    mask = torch.tensor([[True, True, True, False]])
    a3 = _softmax(s[:3])
    kept3 = [max(x - 1 / 3, 0.0) for x in a3]
    got3 = threshold_attention(torch.tensor(s)[None, :, None], mask, 1.0)[0, :, 0]
    assert got3.tolist() == pytest.approx([k / sum(kept3) for k in kept3] + [0.0], rel=1e-6)
    # per branch: two columns thresholded independently
    two = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]]])
    got2 = threshold_attention(two, None, 0.5)
    kept_half = [max(x - 0.125, 0.0) for x in a]
    assert got2[0, :, 0].tolist() == pytest.approx([k / sum(kept_half) for k in kept_half])
    assert got2[0, :, 1].tolist() == pytest.approx([0.25] * 4)  # uniform: 0.25 - 0.125 each


def test_threshold_fallback_and_zero():
    s = torch.zeros(1, 4, 1)
    assert threshold_attention(s, None, 1.0)[0, :, 0].tolist() == pytest.approx([0.25] * 4)
    assert threshold_attention(s, None, 0.0)[0, :, 0].tolist() == pytest.approx([0.25] * 4)
    assert threshold_attention(s, None, -1.0)[0, :, 0].tolist() == pytest.approx([0.25] * 4)
    # a fully masked bag in a batch with K clamped to 1: stays finite
    mask = torch.tensor([[False] * 4])
    assert torch.isfinite(threshold_attention(s, mask, 0.5)).all()


class _Mean(MILModel):
    """Mean pooling of a Linear projection; weights from pool_weights on zero scores."""

    def __init__(self, **kw) -> None:
        super().__init__(3, 1, **kw)
        self.fc = nn.Linear(3, 2)

    def aggregate(self, h, mask, coords=None, label=None):
        scores = torch.arange(h.shape[1], dtype=torch.float32)[None, :, None]
        w = self.pool_weights(scores, mask)
        return MILOutput(logits=h.sum((1, 2))[:, None], embedding=h[:, 0], scores=scores, weights=w)


def test_pool_weights_follow_training_and_threshold_at_eval():
    a = _softmax([0.0, 1.0, 2.0])
    kept = [max(x - 0.5 / 3, 0) for x in a]
    thr = [k / sum(kept) for k in kept]
    x = torch.zeros(3, 3)
    m = _Mean(attention_threshold=0.5, threshold_at_eval=False)
    m.train()
    assert m(x).weights[0, :, 0].tolist() == pytest.approx(thr, rel=1e-6)
    m.eval()
    assert m(x).weights[0, :, 0].tolist() == pytest.approx(a, rel=1e-6)
    m2 = _Mean(attention_threshold=0.5).eval()
    assert m2(x).weights[0, :, 0].tolist() == pytest.approx(thr, rel=1e-6)
    assert (m2.in_dim, m2.n_classes, m2.attention_threshold, m2.threshold_at_eval) == (
        3,
        1,
        0.5,
        True,
    )
    with pytest.raises(ValueError, match="n_classes must be >= 1, got 0"):
        MILModel(3, 0)
    with pytest.raises(ValueError, match="attention_threshold must be >= 0, got -0.1"):
        MILModel(3, 1, attention_threshold=-0.1)


def test_forward_batches_and_passes_labels():
    seen = {}

    class Probe(_Mean):
        def aggregate(self, h, mask, coords=None, label=None):
            seen.update(h=h, mask=mask, coords=coords, label=label)
            return super().aggregate(h, mask)

    m = Probe()
    m(torch.zeros(4, 3), label=1)
    assert seen["h"].shape == (1, 4, 2) and seen["label"].tolist() == [1]
    m(torch.zeros(2, 4, 3), mask=torch.ones(2, 4), coords=torch.zeros(2, 4, 2))
    assert seen["mask"].dtype == torch.bool and seen["label"] is None

    class NeedsCoords(_Mean):
        needs_coords = True

    with pytest.raises(ValueError, match="NeedsCoords needs patch coordinates"):
        NeedsCoords()(torch.zeros(4, 3))


def test_batchify_shapes_and_errors():
    x, mask, coords = batchify(torch.zeros(5, 3), torch.ones(5), torch.zeros(5, 2))
    assert (x.shape, mask.shape, coords.shape) == ((1, 5, 3), (1, 5), (1, 5, 2))
    assert mask.dtype == torch.bool
    x, mask, coords = batchify(torch.zeros(2, 5, 3))
    assert x.shape == (2, 5, 3) and mask is None and coords is None
    with pytest.raises(ValueError, match=r"features must be \(N, D\) or \(B, N, D\), got \(3,\)"):
        batchify(torch.zeros(3))
    with pytest.raises(ValueError, match="empty bag"):
        batchify(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"mask \(1, 4\) does not match features \(1, 5, 3\)"):
        batchify(torch.zeros(5, 3), torch.ones(1, 4))


def _branched(branch_of_class: tuple[int, ...]) -> MILOutput:
    """An output with one attention branch per class over 2 instances."""
    r = len(branch_of_class)
    return MILOutput(
        logits=torch.zeros(1, r),
        embedding=torch.zeros(1, 2),
        scores=torch.arange(2.0 * r).reshape(1, 2, r),
        weights=torch.arange(2.0 * r).reshape(1, 2, r) / 10,
        branch_of_class=branch_of_class,
    )


def test_output_branches():
    out = _branched((2, 0, 1))
    assert out.branch(0) == 2 and out.branch(2) == 1
    assert out.class_scores(0).tolist() == [[2.0, 5.0]]
    assert out.class_weights(1)[0].tolist() == pytest.approx([0.0, 0.3])
    assert out.class_scores().tolist() == [[0.0, 3.0]]  # default: class 1
    single = MILOutput(logits=torch.zeros(1, 1), embedding=torch.zeros(1, 2))
    assert single.branch(5) == 0 and single.class_scores() is None
    assert single.class_weights() is None


# -- survivors of the models/base.py mutation run (docs/results/2026-12-01-mutation.md) ---------


def test_output_defaults_are_class_one():
    out = _branched((1, 0))
    assert out.branch() == 0  # class 1's branch, not class 2 (which does not exist)
    assert out.class_weights()[0].tolist() == pytest.approx([0.0, 0.2])


def test_masked_softmax_mixed_batch_and_full_shape_mask():
    s = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])  # (2, 2, 1)
    mask = torch.tensor([[False, False], [True, True]])  # bag 0 fully masked, bag 1 not
    got = masked_softmax(s, mask)
    assert got[0].tolist() == [[0.0], [0.0]]  # finite zeros, decided per bag
    assert got[1, :, 0].tolist() == pytest.approx(_softmax([3.0, 4.0]))
    # a mask with the scores' own shape (B, N, R) is used as is: one branch masks instance 1
    s2 = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]]])
    m2 = torch.tensor([[[True, True], [True, False], [True, True]]])
    got2 = masked_softmax(s2, m2)
    assert got2[0, :, 0].tolist() == pytest.approx(_softmax([1.0, 2.0, 0.0]))
    assert got2[0, :, 1].tolist() == pytest.approx(
        [*_softmax([1.0, 0.0])[:1], 0.0, _softmax([1.0, 0.0])[1]]
    )


def test_threshold_renormalises_with_eps_added():
    # two instances, T / K chosen so that the kept total is tiny (~1e-7): eps = 1e-8 is visible.
    # The kept weight is computed in float32 exactly as the paper's Eq. 3 says, then Eq. 4 by hand.
    s = torch.tensor([0.0, 1.0])[None, :, None]
    w = torch.softmax(s, dim=1)
    t = 2 * (float(w[0, 1, 0]) - 1e-7)
    kept = torch.clamp(w - t / 2, min=0.0)[0, 1, 0].item()
    assert 0 < kept < 1e-6
    got = threshold_attention(s, None, t)[0, :, 0]
    assert got[1].item() == pytest.approx(kept / (kept + 1e-8), rel=1e-5)
    assert got[0].item() == 0.0


def test_fallback_counts_bags_not_branches_and_single_real_instance():
    class Two(_Mean):
        def aggregate(self, h, mask, coords=None, label=None):
            scores = torch.zeros(h.shape[0], h.shape[1], 2)  # two flat branches: both fall back
            w = self.pool_weights(scores, mask)
            return MILOutput(logits=h.sum((1, 2))[:, None], embedding=h[:, 0], weights=w)

    m = Two(attention_threshold=1.0).train()
    m(torch.zeros(3, 3))
    assert int(m.fallback_events) == 1  # one bag, although both branches fell back
    # one real instance among padding: K = 1, its weight 1 <= T / K = 1 -> all suppressed
    m1 = _Mean(attention_threshold=1.0).train()
    out = m1(torch.zeros(1, 3, 3), mask=torch.tensor([[True, False, False]]))
    assert out.weights[0, :, 0].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert int(m1.fallback_events) == 1


def test_model_defaults_and_batched_labels():
    m = _Mean()
    assert m.attention_threshold == 0.0 and m.threshold_at_eval is True
    seen = {}

    class Probe(_Mean):
        def aggregate(self, h, mask, coords=None, label=None):
            seen["label"] = label
            return super().aggregate(h, mask)

    Probe()(torch.zeros(2, 4, 3), label=torch.tensor([[0], [1]]))
    assert seen["label"].tolist() == [0, 1]


def test_classify_uses_the_classifier_module_or_refuses():
    m = _Mean()
    m.classifier = nn.Linear(2, 1)
    e = torch.tensor([[1.0, -2.0]])
    assert torch.equal(m.classify(e), m.classifier(e))
    with pytest.raises(
        ValueError,
        match=r"^_Mean has no bag classifier \(MILModel.classify\); use scoring='attention' or "
        r"give the model a bag classifier$",
    ):
        _Mean().classify(e)
