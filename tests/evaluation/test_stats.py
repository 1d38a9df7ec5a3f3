"""Bootstrap CIs, fold summaries, Mann-Whitney U and significance stars."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from histomil.evaluation import bootstrap_ci, mann_whitney, significance_stars, summarize


def _data(seed=0, n=80):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.25, n), 0, 1)
    return y, p


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    y, p = _data()
    a = bootstrap_ci(roc_auc_score, y, p, n=100, seed=3)
    b = bootstrap_ci(roc_auc_score, y, p, n=100, seed=3)
    c = bootstrap_ci(roc_auc_score, y, p, n=100, seed=4)
    assert a == b and a != c
    assert a.estimate == pytest.approx(roc_auc_score(y, p))
    assert a.low <= a.estimate <= a.high and a.high - a.low > 0.01
    assert a.n_valid == 100  # stratified: every resample keeps both classes


def test_bootstrap_ci_stratified_keeps_class_counts():
    y = np.array([1] + [0] * 30)
    seen = []
    bootstrap_ci(lambda yy: seen.append(int(yy.sum())) or 0.0, y, n=50, seed=0)
    assert set(seen) == {1}


def test_bootstrap_ci_narrows_with_alpha_and_drops_failures():
    y, p = _data(n=200)
    wide = bootstrap_ci(roc_auc_score, y, p, n=100, alpha=0.01)
    narrow = bootstrap_ci(roc_auc_score, y, p, n=100, alpha=0.5)
    assert wide.low < narrow.low < narrow.high < wide.high
    # unstratified on a continuous first array: resamples can fail and are dropped
    r = bootstrap_ci(lambda v: np.nan if v.max() < 0.99 else 1.0, np.linspace(0, 1, 10), n=50)
    assert 0 < r.n_valid < 50
    with pytest.raises(ValueError, match="differ"):
        bootstrap_ci(roc_auc_score, y, p[:-1])


def test_summarize():
    s = summarize([0.8, 0.9, 0.85])
    assert s.mean == pytest.approx(0.85) and s.sd == pytest.approx(0.05) and s.n == 3
    assert s.text == "0.850 ± 0.050"
    one = summarize([0.7])
    assert np.isnan(one.sd) and one.text == "0.700"
    with pytest.warns(UserWarning):
        assert summarize([0.5, np.nan, 0.7]).n == 2


def test_mann_whitney_matches_scipy():
    a = [0.81, 0.84, 0.79, 0.86, 0.83]
    b = [0.71, 0.74, 0.80, 0.69, 0.72]
    res = mann_whitney(a, b)
    ref = mannwhitneyu(a, b, alternative="two-sided")
    assert res.statistic == pytest.approx(ref.statistic) and res.pvalue == pytest.approx(ref.pvalue)
    # all of a above b except one pair (0.80 > 0.79): U = 24 of 25, exact p = 2 * 2 / 252
    assert res.statistic == 24.0
    assert res.pvalue == pytest.approx(4 / 252)
    assert res.stars == "*"


def test_significance_stars_paper_levels():
    assert significance_stars(0.2) == "ns"
    assert significance_stars(0.04) == "*"
    assert significance_stars(0.0009) == "**"
    assert significance_stars(0.00009) == "***"
    assert significance_stars(0.000009) == "****"
    assert significance_stars(float("nan")) == "n/a"


def test_bootstrap_cis_equals_one_bootstrap_ci_per_metric():
    from histomil.evaluation import bootstrap_cis

    rng = np.random.default_rng(1)
    y = np.r_[np.ones(15), np.zeros(15)].astype(int)
    p = rng.random(30)

    def both(y, p):
        return {"mean_pos": float(p[y == 1].mean()), "nan_often": np.nan if p[0] > 0.5 else 1.0}

    cis = bootstrap_cis(both, y, p, n=200, seed=4)
    for name in ("mean_pos", "nan_often"):
        one = bootstrap_ci(lambda y, p, name=name: both(y, p)[name], y, p, n=200, seed=4)
        assert cis[name] == one
    assert 0 < cis["nan_often"].n_valid < 200  # NaN resamples dropped per metric
