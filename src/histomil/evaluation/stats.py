"""Statistics over predictions and runs: bootstrap CIs, fold summaries, Mann-Whitney U."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from histomil.evaluation.metrics import MetricWarning


@dataclass(frozen=True)
class BootstrapCI:
    """Point estimate on the full data and a percentile interval from ``n_valid`` resamples."""

    estimate: float
    low: float
    high: float
    alpha: float
    n_valid: int

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Summary:
    """Mean and sample sd (ddof=1) over folds; ``text`` is e.g. ``"0.839 ± 0.050"``."""

    mean: float
    sd: float
    n: int
    text: str


@dataclass(frozen=True)
class MannWhitney:
    statistic: float
    pvalue: float
    stars: str


def _is_binary(a: np.ndarray) -> bool:
    values = np.unique(a)
    return a.ndim == 1 and values.size == 2 and np.isin(values, (0, 1)).all()


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: ArrayLike,
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    strata: ArrayLike | None = None,
) -> BootstrapCI:
    """Percentile bootstrap CI of ``metric_fn(*arrays)``; rows of every array resampled together.

    Resampling is stratified by ``strata`` (N,), by default by the first array when it holds
    binary 0/1 labels (so every resample keeps the class counts). Resamples where the metric is
    NaN or raises ``ValueError``/``ZeroDivisionError`` are dropped (``n_valid`` counts the rest).
    """
    cis = bootstrap_cis(
        lambda *a: {"value": metric_fn(*a)}, *arrays, n=n, alpha=alpha, seed=seed, strata=strata
    )
    return cis["value"]


def bootstrap_cis(
    metrics_fn: Callable[..., Mapping[str, float]],
    *arrays: ArrayLike,
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    strata: ArrayLike | None = None,
) -> dict[str, BootstrapCI]:
    """:func:`bootstrap_ci` of every metric ``metrics_fn`` returns by name, from one set of
    resamples (each resample evaluated once; the same resamples, hence the same intervals, as
    one :func:`bootstrap_ci` call per metric with this seed)."""
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    arrs = [np.asarray(a) for a in arrays]
    size = arrs[0].shape[0]
    if any(a.shape[0] != size for a in arrs):
        raise ValueError(f"arrays differ in length: {[a.shape[0] for a in arrs]}")
    if not 0 < alpha < 1 or n < 1:
        raise ValueError("need 0 < alpha < 1 and n >= 1")
    if strata is None and _is_binary(arrs[0]):
        strata = arrs[0]
    groups = (
        [np.arange(size)]
        if strata is None
        else [np.flatnonzero(np.asarray(strata) == g) for g in np.unique(strata)]
    )
    rng = np.random.default_rng(seed)
    estimates = {k: float(v) for k, v in metrics_fn(*arrs).items()}
    values: dict[str, list[float]] = {k: [] for k in estimates}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        for _ in range(n):
            idx = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])
            try:
                got = metrics_fn(*(a[idx] for a in arrs))
            except (ValueError, ZeroDivisionError):
                continue
            for k, v in got.items():
                if np.isfinite(v):
                    values[k].append(float(v))
    out = {}
    for k, estimate in estimates.items():
        if not values[k]:
            out[k] = BootstrapCI(estimate, np.nan, np.nan, alpha, 0)
            continue
        low, high = np.quantile(values[k], [alpha / 2, 1 - alpha / 2])
        out[k] = BootstrapCI(estimate, float(low), float(high), alpha, len(values[k]))
    return out


def mean_sd(values: Sequence[float | None] | ArrayLike) -> tuple[float, float, int]:
    """Mean, sample sd (ddof=1; NaN for one value) and count of the finite values of ``values``
    (per-fold results; None, NaN and Inf are left out). The one mean +- sd over folds."""
    v = np.asarray(values, dtype=float).ravel()  # None -> NaN
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else np.nan, int(v.size)


def fmt_mean_sd(mean: float, sd: float, digits: int = 3, paren: bool = False) -> str:
    """``"0.839 ± 0.050"`` (or the paper tables' ``"0.839 (0.050)"`` with ``paren``); the mean
    alone when sd is undefined, ``"n/a"`` when the mean is."""
    if not np.isfinite(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    if not np.isfinite(sd):
        return text
    return f"{text} ({sd:.{digits}f})" if paren else f"{text} ± {sd:.{digits}f}"


def summarize(values: Sequence[float] | ArrayLike, digits: int = 3) -> Summary:
    """:func:`mean_sd` and :func:`fmt_mean_sd` of per-fold values, with a warning when
    non-finite values are left out."""
    v = np.asarray(values, dtype=float).ravel()
    if not np.isfinite(v).all():
        warnings.warn(
            f"{int((~np.isfinite(v)).sum())} NaN value(s) left out", MetricWarning, stacklevel=2
        )
    mean, sd, n = mean_sd(v)
    return Summary(mean, sd, n, fmt_mean_sd(mean, sd, digits))


# The rank-induction paper's convention (Figure 2): * P<.05, ** P<.001, *** P<.0001, **** P<.00001.
STAR_LEVELS = ((1e-5, "****"), (1e-4, "***"), (1e-3, "**"), (0.05, "*"))


def significance_stars(p: float, levels: Sequence[tuple[float, str]] = STAR_LEVELS) -> str:
    """Stars for a p-value (paper convention by default); ``"ns"`` when not significant."""
    if not np.isfinite(p):
        return "n/a"
    for cut, stars in sorted(levels):
        if p < cut:
            return stars
    return "ns"


def mann_whitney(a: ArrayLike, b: ArrayLike) -> MannWhitney:
    """Two-sided Mann-Whitney U test between two runs' per-fold values (scipy)."""
    from scipy.stats import mannwhitneyu

    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size == 0 or y.size == 0:
        raise ValueError("mann_whitney needs at least one value in each group")
    res = mannwhitneyu(x, y, alternative="two-sided")
    return MannWhitney(float(res.statistic), float(res.pvalue), significance_stars(res.pvalue))
