"""Pinned discrete-time survival NLL: every term from plain products of hazards (no logs of
cumulative sums), patient by patient."""

from __future__ import annotations

import math

import pytest
import torch

from histomil.objectives.survival import risk_score, survival_curve, survival_nll

LOGITS = [[0.3, -1.2, 0.8, 2.0], [-0.5, 0.1, -2.0, 0.4], [1.5, 1.5, -0.3, 0.0]]


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _patient(logits: list[float], k: int, event: int, alpha: float = 0.0) -> float:
    """-log likelihood of one patient with time in bin k: S_{k-1} h_k (event) or S_k (censored)."""
    h = [_sig(v) for v in logits]
    s_before = math.prod(1 - h[j] for j in range(k))
    if event:
        nll = -math.log(s_before * h[k])
        return (1 - alpha) * nll + alpha * nll
    return (1 - alpha) * -math.log(s_before * (1 - h[k]))


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_survival_nll_patient_by_patient(alpha):
    bins, events = [0, 2, 3], [1, 0, 1]
    want = [_patient(lg, k, e, alpha) for lg, k, e in zip(LOGITS, bins, events, strict=True)]
    args = (torch.tensor(LOGITS), torch.tensor(bins), torch.tensor(events))
    none = survival_nll(*args, alpha=alpha, reduction="none")
    torch.testing.assert_close(none, torch.tensor(want), rtol=1e-5, atol=1e-6)
    assert float(survival_nll(*args, alpha=alpha)) == pytest.approx(sum(want) / 3, rel=1e-5)
    total = float(survival_nll(*args, alpha=alpha, reduction="sum"))
    assert total == pytest.approx(sum(want), rel=1e-5)


def test_survival_nll_censored_in_every_bin_and_shapes():
    lg = LOGITS[0]
    for k in range(4):
        got = survival_nll(torch.tensor([lg]), torch.tensor([k]), torch.tensor([0]))
        assert float(got) == pytest.approx(_patient(lg, k, 0), rel=1e-5)
        got_e = survival_nll(torch.tensor([lg]), torch.tensor([[k]]), torch.tensor([1.0]))
        assert float(got_e) == pytest.approx(_patient(lg, k, 1), rel=1e-5)
    with pytest.raises(ValueError, match=r"time-bin index out of range \[0, 3\]: \[4\]"):
        survival_nll(torch.tensor([lg]), torch.tensor([4]), torch.tensor([1]))
    with pytest.raises(ValueError, match="out of range"):
        survival_nll(torch.tensor([lg]), torch.tensor([-1]), torch.tensor([1]))
    with pytest.raises(ValueError, match="reduction must be mean, sum or none, got 'max'"):
        survival_nll(torch.tensor([lg]), torch.tensor([0]), torch.tensor([1]), reduction="max")


def test_survival_curve_and_risk_by_hand():
    curve = survival_curve(torch.tensor(LOGITS))
    for row, lg in zip(curve.tolist(), LOGITS, strict=True):
        h = [_sig(v) for v in lg]
        want = [math.prod(1 - h[j] for j in range(k + 1)) for k in range(4)]
        assert row == pytest.approx(want, rel=1e-5)
    risk = risk_score(torch.tensor(LOGITS))
    assert risk.tolist() == pytest.approx([-sum(r) for r in curve.tolist()], rel=1e-5)
    # higher hazards -> higher risk
    assert float(risk_score(torch.tensor([[2.0, 2.0]]))) > float(risk_score(torch.zeros(1, 2)))
