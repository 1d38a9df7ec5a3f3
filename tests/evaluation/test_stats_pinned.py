"""Pinned statistics: mean/SD, Mann-Whitney p-values and stars against scipy and hand values on
fixed numbers, and the bootstrap replayed by hand."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as sp

from histomil.evaluation.metrics import MetricWarning
from histomil.evaluation.stats import (
    BootstrapCI,
    bootstrap_ci,
    mann_whitney,
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


def test_bootstrap_replayed_by_hand():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0, 0])
    v = np.arange(10.0)

    def metric(yy, vv):
        return float(vv[yy == 1].mean() - vv[yy == 0].mean())

    got = bootstrap_ci(metric, y, v, n=40, alpha=0.2, seed=5)
    rng = np.random.default_rng(5)
    groups = [np.flatnonzero(y == 0), np.flatnonzero(y == 1)]  # stratified by binary y
    values = []
    for _ in range(40):
        idx = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])
        values.append(metric(y[idx], v[idx]))
    low, high = np.quantile(values, [0.1, 0.9])
    assert got == BootstrapCI(metric(y, v), float(low), float(high), 0.2, 40)
    # explicit strata override the labels; a continuous first array is not stratified
    cont = bootstrap_ci(lambda a: float(a.mean()), v, n=30, seed=1)
    rng = np.random.default_rng(1)
    means = [float(v[rng.integers(0, 10, 10)].mean()) for _ in range(30)]
    assert (cont.low, cont.high) == tuple(np.quantile(means, [0.025, 0.975]))
    strata = np.array([0] * 5 + [1] * 5)
    st = bootstrap_ci(lambda a: float(a.mean()), v, n=30, seed=1, strata=strata)
    rng = np.random.default_rng(1)
    halves = [np.arange(5), np.arange(5, 10)]
    means = [
        float(v[np.concatenate([g[rng.integers(0, 5, 5)] for g in halves])].mean())
        for _ in range(30)
    ]
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
