"""Discrete-time survival: negative log-likelihood over time bins and risk scores.

The standard formulation of Zadeh & Schmid (2020) used by Patch-GCN/MCAT and MHIM: the model
outputs one hazard logit per time bin, ``h_k = sigmoid(logit_k)`` is the probability of the
event in bin k given survival to bin k, ``S_k = prod_{j<=k} (1 - h_j)``. For a patient whose
time falls in bin ``y``:

- event observed (``c = 0``): ``log L = log S_{y-1} + log h_y``;
- censored (``c = 1``): ``log L = log S_y`` (survived at least through bin y).

``loss = (1 - alpha) * (-log L) + alpha * (uncensored part)``; ``alpha = 0`` (default) is the
plain likelihood. Logs are computed with ``logsigmoid`` rather than clamped logs.

Risk for the C-index: ``risk = -sum_k S_k`` (higher risk = shorter expected survival), the
convention of Patch-GCN/MCAT; ``concordance_index(times, -risk, events)`` style APIs therefore
take the negative risk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def survival_nll(
    logits: Tensor, bins: Tensor, events: Tensor, alpha: float = 0.0, reduction: str = "mean"
) -> Tensor:
    """Discrete-time survival NLL. logits (B, K) hazard logits; bins (B,) int time-bin index;
    events (B,) 1 = event observed, 0 = censored. Returns a scalar (``mean``/``sum``) or (B,)."""
    logits = logits.reshape(logits.shape[0], -1)
    bins = bins.reshape(-1).long().to(logits.device)
    censored = 1.0 - events.reshape(-1).to(logits.dtype).to(logits.device)
    k = logits.shape[1]
    if bins.numel() and (int(bins.min()) < 0 or int(bins.max()) >= k):
        raise ValueError(f"time-bin index out of range [0, {k - 1}]: {bins.tolist()}")
    log_h = F.logsigmoid(logits)  # (B, K) log hazard
    log_1mh = F.logsigmoid(-logits)  # (B, K) log(1 - hazard)
    log_s = torch.cumsum(log_1mh, dim=1)  # (B, K) log S_k
    log_s_pad = torch.cat([torch.zeros_like(log_s[:, :1]), log_s], dim=1)  # (B, K + 1)
    idx = bins.unsqueeze(1)
    uncensored = -(1.0 - censored) * (
        log_s_pad.gather(1, idx).squeeze(1) + log_h.gather(1, idx).squeeze(1)
    )
    censored_term = -censored * log_s.gather(1, idx).squeeze(1)
    loss = (1.0 - alpha) * (uncensored + censored_term) + alpha * uncensored
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")


def survival_curve(logits: Tensor) -> Tensor:
    """Survival probabilities S_k (B, K) from hazard logits (B, K)."""
    return torch.exp(torch.cumsum(F.logsigmoid(-logits), dim=-1))


def risk_score(logits: Tensor) -> Tensor:
    """Risk (B,) = -sum_k S_k: higher means earlier expected event."""
    return -survival_curve(logits).sum(dim=-1)
