"""C-index sign, bootstrap CI and quantile time bins."""

from __future__ import annotations

import numpy as np
import pytest

from histomil.evaluation import concordance_ci, concordance_index, discretize, time_bins
from histomil.evaluation.metrics import MetricWarning


def test_cindex_sign_high_risk_short_survival():
    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    e = np.ones(5)
    assert concordance_index(t, -t, e) == 1.0  # risk decreasing with time: perfect
    assert concordance_index(t, t, e) == 0.0
    assert concordance_index(t, np.zeros(5), e) == 0.5


def test_cindex_by_hand_with_censoring():
    # comparable pairs need the earlier time to be an event: (0,1), (0,2), (2,3)... by hand
    t = np.array([1.0, 3.0, 2.0, 4.0])
    e = np.array([1, 0, 1, 0])
    r = np.array([0.9, 0.1, 0.2, 0.3])
    # pairs (i earlier event): 0<1 ok, 0<2 ok, 0<3 ok, 2<1 (0.2>0.1 ok), 2<3 (0.2<0.3 bad)
    assert concordance_index(t, r, e) == pytest.approx(4 / 5)
    with pytest.warns(MetricWarning):
        assert np.isnan(concordance_index(t, r, np.zeros(4)))


def test_concordance_ci():
    rng = np.random.default_rng(0)
    risk = rng.normal(size=120)
    t = rng.exponential(np.exp(-risk))
    e = (rng.random(120) < 0.7).astype(int)
    ci = concordance_ci(t, risk, e, n=100, seed=1)
    assert ci == concordance_ci(t, risk, e, n=100, seed=1)
    assert 0.55 < ci.estimate and ci.low <= ci.estimate <= ci.high


def test_time_bins_from_uncensored_quantiles():
    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 100.0, 200.0])
    e = np.array([1, 1, 1, 1, 1, 0, 0])
    edges = time_bins(t, e, n_bins=4)
    np.testing.assert_allclose(edges, [0.0, 2.0, 3.0, 4.0, np.inf])  # censored times ignored
    np.testing.assert_array_equal(discretize([0.5, 2.0, 2.5, 4.0, 1e6], edges), [0, 1, 1, 3, 3])
    with pytest.raises(ValueError, match="uncensored"):
        time_bins(t, np.zeros(7))
    with pytest.warns(MetricWarning):
        time_bins([1.0, 1.0, 1.0, 1.0], [1, 1, 1, 1])
