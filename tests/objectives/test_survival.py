from __future__ import annotations

import math

import pytest
import torch

from histomil.objectives import risk_score, survival_curve, survival_nll


def _reference(hazards, bins, censor, alpha, eps=1e-12):
    """Patch-GCN style reference with explicit products (float64)."""
    out = []
    for h, y, c in zip(hazards.tolist(), bins.tolist(), censor.tolist(), strict=True):
        s = [1.0]
        for hk in h:
            s.append(s[-1] * (1 - hk))
        unc = -(1 - c) * (math.log(max(s[y], eps)) + math.log(h[y]))
        cen = -c * math.log(max(s[y + 1], eps))
        out.append((1 - alpha) * (unc + cen) + alpha * unc)
    return sum(out) / len(out)


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_nll_matches_reference(alpha):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 4, generator=g, dtype=torch.float64)
    bins = torch.tensor([0, 1, 2, 3, 3, 0, 2, 1])
    events = torch.tensor([1, 0, 1, 0, 1, 0, 0, 1])
    got = survival_nll(logits, bins, events, alpha=alpha)
    ref = _reference(torch.sigmoid(logits), bins, 1 - events, alpha)
    assert got.item() == pytest.approx(ref, rel=1e-9)


def test_risk_orders_by_hazard():
    low = torch.full((1, 4), -3.0)
    high = torch.full((1, 4), 3.0)
    assert risk_score(high) > risk_score(low)
    s = survival_curve(torch.zeros(1, 3))
    assert torch.allclose(s, torch.tensor([[0.5, 0.25, 0.125]]))


def test_nll_rejects_bad_bins():
    with pytest.raises(ValueError, match="out of range"):
        survival_nll(torch.zeros(1, 4), torch.tensor([4]), torch.tensor([1]))
