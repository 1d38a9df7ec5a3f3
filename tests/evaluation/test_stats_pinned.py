"""Pinned statistics: mean/SD, Mann-Whitney p-values and stars against scipy and hand values on
fixed numbers, and the bootstrap replayed by hand."""

from __future__ import annotations

import math
import os
import statistics
import warnings

import numpy as np
import pytest
from scipy import stats as sp

from histomil.evaluation.metrics import MetricWarning
from histomil.evaluation.stats import (
    BootstrapCI,
    bootstrap_ci,
    bootstrap_cis,
    fmt_mean_sd,
    mann_whitney,
    mean_sd,
    significance_stars,
    summarize,
)

A = [0.81, 0.84, 0.79, 0.88, 0.83]
B = [0.74, 0.77, 0.80, 0.72, 0.76]


def test_summarize_against_statistics_module():
    s = summarize(A)
    assert s.mean == pytest.approx(statistics.mean(A))
    assert s.sd == pytest.approx(statistics.stdev(A))  # sample sd, ddof = 1
    assert s.n == 5
    assert s.text == f"{statistics.mean(A):.3f} ± {statistics.stdev(A):.3f}"
    assert summarize(A, digits=2).text == "0.83 ± 0.03"
    one = summarize([0.5])
    assert (one.mean, one.n, one.text) == (0.5, 1, "0.500") and math.isnan(one.sd)
    with pytest.warns(MetricWarning, match="1 NaN value"):
        nan = summarize([0.5, float("nan"), 0.7])
    assert (nan.mean, nan.n) == (pytest.approx(0.6), 2)
    assert summarize([]).text == "n/a"


def test_mann_whitney_against_scipy_and_by_hand():
    res = mann_whitney(A, B)
    ref = sp.mannwhitneyu(A, B, alternative="two-sided")
    assert res.statistic == ref.statistic == 24.0  # U of A: 24 of the 25 pairs favour A
    assert res.pvalue == pytest.approx(ref.pvalue)
    # exact two-sided p for n = m = 5 and U = 24: 2 * P(U >= 24) = 2 * 2 / C(10, 5)
    assert res.pvalue == pytest.approx(4 / 252)
    assert res.stars == "*"
    rev = mann_whitney(B, A)
    assert rev.statistic == 1.0 and rev.pvalue == pytest.approx(res.pvalue)
    nan = mann_whitney([*A, float("nan")], B)  # NaN folds dropped
    assert nan.pvalue == pytest.approx(res.pvalue)
    with pytest.raises(ValueError, match="at least one value in each group"):
        mann_whitney([float("nan")], B)


@pytest.mark.parametrize(
    ("p", "stars"),
    [
        (0.2, "ns"),
        (0.05, "ns"),
        (0.0499, "*"),
        (0.001, "*"),
        (0.00099, "**"),
        (1e-4, "**"),
        (9.9e-5, "***"),
        (1e-5, "***"),
        (9.9e-6, "****"),
        (float("nan"), "n/a"),
    ],
)
def test_significance_stars_levels(p, stars):
    assert significance_stars(p) == stars


def test_significance_stars_custom_levels():
    assert significance_stars(0.03, [(0.01, "++"), (0.05, "+")]) == "+"
    assert significance_stars(0.005, [(0.05, "+"), (0.01, "++")]) == "++"


def _replay(groups: list[np.ndarray], n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups]) for _ in range(n)]


def test_bootstrap_replayed_by_hand():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0, 0])
    v = np.arange(10.0)

    def metric(yy, vv):
        return float(vv[yy == 1].mean() - vv[yy == 0].mean())

    got = bootstrap_ci(metric, y, v, n=40, alpha=0.2, seed=5)
    groups = [np.flatnonzero(y == 0), np.flatnonzero(y == 1)]  # stratified by binary y
    values = [metric(y[i], v[i]) for i in _replay(groups, 40, 5)]
    low, high = np.quantile(values, [0.1, 0.9])
    assert got == BootstrapCI(metric(y, v), float(low), float(high), 0.2, 40)
    # explicit strata override the labels; a continuous first array is not stratified
    cont = bootstrap_ci(lambda a: float(a.mean()), v, n=30, seed=1)
    means = [float(v[i].mean()) for i in _replay([np.arange(10)], 30, 1)]
    assert (cont.low, cont.high) == tuple(np.quantile(means, [0.025, 0.975]))
    strata = np.array([0] * 5 + [1] * 5)
    st = bootstrap_ci(lambda a: float(a.mean()), v, n=30, seed=1, strata=strata)
    halves = [np.arange(5), np.arange(5, 10)]
    means = [float(v[i].mean()) for i in _replay(halves, 30, 1)]
    assert (st.low, st.high) == tuple(np.quantile(means, [0.025, 0.975]))


def test_bootstrap_errors_and_all_invalid():
    with pytest.raises(ValueError, match="at least one array"):
        bootstrap_ci(len)
    with pytest.raises(ValueError, match="0 < alpha < 1 and n >= 1"):
        bootstrap_ci(len, [1, 2], alpha=1.0)
    with pytest.raises(ValueError, match="0 < alpha < 1 and n >= 1"):
        bootstrap_ci(len, [1, 2], n=0)

    def fails(a):
        if len(set(a.tolist())) < 3:
            raise ZeroDivisionError
        return float("nan")

    res = bootstrap_ci(fails, np.arange(3.0), n=10)
    assert res.n_valid == 0 and math.isnan(res.low) and math.isnan(res.high)
    assert math.isnan(res.estimate)
    assert str(BootstrapCI(0.8, 0.7, 0.9, 0.05, 10)) == "0.800 [0.700, 0.900]"


# -- survivors of the evaluation/stats.py mutation run (docs/results/2026-12-01-mutation.md) ----


def test_bootstrap_defaults_and_two_valued_non_binary_data_is_not_stratified():
    v = np.array([3.0, 7.0, 3.0, 7.0, 3.0, 3.0, 7.0, 7.0, 3.0, 3.0])  # two values, not 0/1
    got = bootstrap_ci(lambda a: float(a.mean()), v)  # defaults: n = 1000, seed 0
    means = [float(v[i].mean()) for i in _replay([np.arange(10)], 1000, 0)]
    low, high = np.quantile(means, [0.025, 0.975])
    assert got == BootstrapCI(float(v.mean()), float(low), float(high), 0.05, 1000)
    both = bootstrap_cis(lambda a: {"m": float(a.mean())}, v)["m"]
    assert (both.low, both.high, both.n_valid) == (got.low, got.high, 1000)
    # continuous values: the default seed (0) decides the resamples
    c = np.array([0.3, 1.7, 2.2, 0.9, 5.1, 3.3, 0.1, 4.4])
    means = [float(c[i].mean()) for i in _replay([np.arange(8)], 1000, 0)]
    for res in (
        bootstrap_ci(lambda a: float(a.mean()), c),
        bootstrap_cis(lambda a: {"m": float(a.mean())}, c)["m"],
    ):
        assert (res.low, res.high) == tuple(np.quantile(means, [0.025, 0.975]))


def test_bootstrap_bounds_and_exact_messages():
    with pytest.raises(ValueError, match=r"^bootstrap_ci needs at least one array$"):
        bootstrap_cis(len)
    with pytest.raises(ValueError, match=r"^need 0 < alpha < 1 and n >= 1$"):
        bootstrap_cis(lambda a: {"n": 1.0}, [1, 2], alpha=0.0)
    one = bootstrap_ci(lambda a: float(a.sum()), np.array([1.0, 2.0]), n=1)
    assert one.n_valid == 1


def test_bootstrap_skips_failed_resamples_and_keeps_every_metric():
    v = np.array([0.0, 1.0, 2.0, 3.0])

    def metric(a):
        if a.min() == 0.0:  # fails on resamples that contain the first value
            raise ZeroDivisionError
        return {"never": float("nan"), "mean": float(a.mean())}

    def fine(a):
        return {"never": float("nan"), "mean": 1.0}

    idx = _replay([np.arange(4)], 50, 3)
    ok = [float(v[i].mean()) for i in idx if v[i].min() != 0.0]
    got = bootstrap_cis(lambda a: fine(a) if a is v else metric(a), v, n=50, seed=3, alpha=0.1)
    assert 0 < len(ok) < 50 and got["mean"].n_valid == len(ok)
    assert (got["mean"].low, got["mean"].high) == tuple(np.quantile(ok, [0.05, 0.95]))
    never = got["never"]  # no finite value at all: NaN bounds, the asked alpha, 0 valid
    assert math.isnan(never.low) and never.alpha == 0.1 and never.n_valid == 0


def test_bootstrap_lets_other_warnings_through():
    calls = []

    def noisy(a):
        calls.append(1)
        if len(calls) > 1:  # only inside the resampling loop, not for the estimate
            warnings.warn("not a metric warning", UserWarning, stacklevel=1)
        return float(a.mean())

    with pytest.warns(UserWarning, match="not a metric warning"):
        bootstrap_ci(noisy, np.arange(4.0), n=3)


def test_mean_sd_counts_and_edges():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one value: NaN sd without numpy's ddof warning
        mean, sd, n = mean_sd([0.5])
    assert (mean, n) == (0.5, 1) and math.isnan(sd)
    assert mean_sd([1.0, 3.0]) == pytest.approx((2.0, math.sqrt(2.0), 2))
    m, s_, n = mean_sd([0.5, None, 0.7])
    assert (m, n) == (pytest.approx(0.6), 2) and s_ == pytest.approx(statistics.stdev([0.5, 0.7]))
    empty = mean_sd([])
    assert math.isnan(empty[0]) and empty[2] == 0
    assert fmt_mean_sd(0.8391, 0.0504) == "0.839 ± 0.050"
    assert fmt_mean_sd(0.8391, 0.0504, paren=True) == "0.839 (0.050)"


def test_summarize_and_mann_whitney_take_none_and_point_warnings_at_the_caller():
    with pytest.warns(MetricWarning, match="1 NaN value") as rec:
        got = summarize([0.5, None, 0.7])
    if os.environ.get("HISTOMIL_MUTATION") != "1":  # mutmut's trampolines add a stack frame
        assert rec[0].filename == __file__
    assert (got.mean, got.n) == (pytest.approx(0.6), 2)
    with_none = mann_whitney([0.8, None, 0.9, 0.7], [0.5, None, 0.6])
    assert with_none == mann_whitney([0.8, 0.9, 0.7], [0.5, 0.6])
    single = mann_whitney([0.8, 0.9, 0.7], [0.5])
    assert single.pvalue == pytest.approx(sp.mannwhitneyu([0.8, 0.9, 0.7], [0.5]).pvalue)
    with pytest.raises(ValueError, match=r"^mann_whitney needs at least one value in each group$"):
        mann_whitney([], [0.5])
