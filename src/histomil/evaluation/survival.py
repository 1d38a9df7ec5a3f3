"""Survival evaluation: C-index (higher risk = shorter survival) and discrete time bins.

Time bins follow the Patch-GCN / MHIM convention: edges are quantiles of the UNCENSORED
times, the first edge is replaced by 0 and the last by +inf, and a time ``t`` falls in bin
``i`` when ``edges[i] <= t < edges[i + 1]``.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from histomil.evaluation.metrics import MetricWarning
from histomil.evaluation.stats import BootstrapCI, bootstrap_ci


def _survival_inputs(times, risks, events) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=float).ravel()
    r = np.asarray(risks, dtype=float).ravel()
    e = np.asarray(events).astype(float).ravel()
    if not t.shape == r.shape == e.shape:
        raise ValueError(f"times {t.shape}, risks {r.shape}, events {e.shape} differ in length")
    if not np.isin(e, (0.0, 1.0)).all():
        raise ValueError("events must be 0 (censored) or 1 (event observed)")
    if not (np.isfinite(t).all() and np.isfinite(r).all()):
        raise ValueError("times or risks contain NaN or Inf")
    return t, r, e.astype(bool)


def concordance_index(times: ArrayLike, risks: ArrayLike, events: ArrayLike) -> float:
    """Harrell's C-index (lifelines) of ``risks`` (N,): higher risk = expected shorter survival.

    ``times`` (N,), ``events`` (N,) 1 observed / 0 censored. NaN (with a warning) when no
    pair is comparable (e.g. no events).
    """
    from lifelines.utils import concordance_index as lifelines_cindex

    t, r, e = _survival_inputs(times, risks, events)
    try:
        # lifelines expects scores that grow with survival time: negate the risks
        return float(lifelines_cindex(t, -r, e))
    except ZeroDivisionError:
        warnings.warn("C-index undefined: no comparable pairs", MetricWarning, stacklevel=2)
        return np.nan


def concordance_ci(
    times: ArrayLike,
    risks: ArrayLike,
    events: ArrayLike,
    *,
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """C-index with a percentile bootstrap CI (resamples stratified by event status)."""
    t, r, e = _survival_inputs(times, risks, events)
    return bootstrap_ci(
        concordance_index, t, r, e.astype(int), n=n, alpha=alpha, seed=seed, strata=e
    )


def _finite_times(times: ArrayLike) -> np.ndarray:
    """Times as a flat float array; a NaN or infinite time is refused (it would silently give
    NaN bin edges or land in the last bin)."""
    t = np.asarray(times, dtype=float).ravel()
    bad = ~np.isfinite(t)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} survival time(s) are NaN or infinite (first at index "
            f"{int(np.flatnonzero(bad)[0])}); every case needs a finite time"
        )
    return t


def time_bins(times: ArrayLike, events: ArrayLike, n_bins: int = 4) -> np.ndarray:
    """(n_bins + 1,) bin edges from quantiles of the uncensored ``times`` (first 0, last inf).

    Compute on TRAINING cases and reuse for validation/test. Raises when there is no event;
    warns when quantiles coincide (empty bins).
    """
    t = _finite_times(times)
    e = np.asarray(events).astype(bool).ravel()
    if t.shape != e.shape:
        raise ValueError(f"times {t.shape} and events {e.shape} differ in length")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if not e.any():
        raise ValueError("time bins need at least one uncensored time")
    inner = np.quantile(t[e], np.arange(1, n_bins) / n_bins)
    edges = np.concatenate([[0.0], inner, [np.inf]])
    if np.any(np.diff(edges) <= 0):
        warnings.warn(
            f"duplicate time-bin edges {edges}: some bins are empty", MetricWarning, stacklevel=2
        )
    return edges


def discretize(times: ArrayLike, edges: ArrayLike) -> np.ndarray:
    """(N,) int64 bin index of each time: ``edges[i] <= t < edges[i + 1]``, clipped to the bins."""
    t = _finite_times(times)
    ed = np.asarray(edges, dtype=float).ravel()
    if ed.size < 2:
        raise ValueError("need at least two edges")
    idx = np.searchsorted(ed, t, side="right") - 1
    return np.clip(idx, 0, ed.size - 2).astype(np.int64)
