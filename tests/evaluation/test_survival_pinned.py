"""Pinned survival evaluation: Harrell's C-index by brute force over the comparable pairs, and
the time bins / discretisation by hand."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from histomil.evaluation.metrics import MetricWarning
from histomil.evaluation.survival import (
    concordance_ci,
    concordance_index,
    discretize,
    time_bins,
)


def _harrell(times, risks, events) -> float:
    """Pairs (i, j) with t_i < t_j and event i: concordant when risk_i > risk_j, 1/2 on ties."""
    num = den = 0.0
    for i in range(len(times)):
        for j in range(len(times)):
            if events[i] and times[i] < times[j]:
                den += 1
                num += 1.0 if risks[i] > risks[j] else 0.5 if risks[i] == risks[j] else 0.0
    return num / den


def test_c_index_brute_force():
    rng = np.random.default_rng(0)
    times = rng.permutation(np.arange(1.0, 31.0))  # distinct times
    events = rng.integers(0, 2, 30)
    risks = np.round(-times / 10 + rng.normal(0, 1.0, 30), 1)  # rounding gives risk ties
    assert len(np.unique(risks)) < 30
    got = concordance_index(times, risks, events)
    assert got == pytest.approx(_harrell(times, risks, events))
    assert concordance_index(times, -risks, events) == pytest.approx(1 - got)
    assert concordance_index([1, 2, 3], [3, 2, 1], [1, 1, 0]) == 1.0
    assert concordance_index([1, 2, 3], [1, 2, 3], [1, 1, 0]) == 0.0


def test_c_index_errors_and_no_pairs():
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetricWarning)
        with pytest.raises(MetricWarning, match="no comparable pairs"):
            concordance_index([1, 2], [0.1, 0.2], [0, 0])
    with pytest.warns(MetricWarning):
        assert np.isnan(concordance_index([1, 2], [0.1, 0.2], [0, 0]))
    with pytest.raises(ValueError, match="differ in length"):
        concordance_index([1, 2], [0.1], [1, 1])
    with pytest.raises(ValueError, match="0 \\(censored\\) or 1"):
        concordance_index([1, 2], [0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="NaN or Inf"):
        concordance_index([1, np.inf], [0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN or Inf"):
        concordance_index([1, 2], [np.nan, 0.2], [1, 1])


def test_concordance_ci_estimate_and_stratified_resamples():
    rng = np.random.default_rng(1)
    times = rng.permutation(np.arange(1.0, 41.0))
    events = (rng.random(40) < 0.6).astype(int)
    risks = -times + rng.normal(0, 8, 40)
    ci = concordance_ci(times, risks, events, n=60, seed=2)
    assert ci.estimate == pytest.approx(_harrell(times, risks, events))
    assert ci.low <= ci.estimate <= ci.high and ci.n_valid == 60 and ci.alpha == 0.05
    assert ci == concordance_ci(times, risks, events, n=60, seed=2)
    assert ci != concordance_ci(times, risks, events, n=60, seed=3)
    narrow = concordance_ci(times, risks, events, n=60, seed=2, alpha=0.5)
    assert ci.low <= narrow.low <= narrow.high <= ci.high


def test_time_bins_are_quantiles_of_uncensored_times():
    times = [5.0, 1.0, 9.0, 3.0, 7.0, 100.0, 2.0, 11.0]
    events = [1, 1, 1, 0, 1, 0, 1, 1]
    # uncensored, sorted: 1 2 5 7 9 11
    edges = time_bins(times, events, n_bins=3)
    # numpy's linear quantiles at 1/3 and 2/3 of 6 values: positions 5/3 and 10/3
    q1 = 2.0 + (5.0 - 2.0) * (5 / 3 - 1)
    q2 = 7.0 + (9.0 - 7.0) * (10 / 3 - 3)
    np.testing.assert_allclose(edges, [0.0, q1, q2, np.inf])
    np.testing.assert_allclose(time_bins(times, events, n_bins=1), [0.0, np.inf])
    with pytest.raises(ValueError, match="at least one uncensored"):
        time_bins(times, [0] * 8)
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        time_bins(times, events, n_bins=0)
    with pytest.raises(ValueError, match="differ in length"):
        time_bins(times, events[:-1])
    with pytest.warns(MetricWarning, match="duplicate time-bin edges"):
        time_bins([1.0, 1.0, 1.0, 2.0], [1, 1, 1, 1], n_bins=4)


def test_discretize_by_hand():
    edges = [0.0, 2.0, 5.0, np.inf]
    times = [0.0, 1.9, 2.0, 4.99, 5.0, 1e9, -1.0]
    want = [0, 0, 1, 1, 2, 2, 0]  # edges[i] <= t < edges[i + 1]; below 0 clipped to bin 0
    assert discretize(times, edges).tolist() == want
    assert discretize(times, edges).dtype == np.int64
    assert discretize([7.0], [0.0, 2.0, 5.0]).tolist() == [1]  # clipped to the last bin
    with pytest.raises(ValueError, match="at least two edges"):
        discretize([1.0], [0.0])


# --- issue 22, mutation survivors of 2026-12-02 ---------------------------------------------


def test_concordance_ci_defaults_are_1000_resamples_seed_0_alpha_5_percent():
    times = [2.0, 5.0, 1.0, 7.0, 4.0, 9.0, 3.0, 6.0]
    events = [1, 0, 1, 1, 0, 1, 1, 0]
    risks = [0.4, 0.1, 0.9, 0.3, 0.2, 0.5, 0.6, 0.0]
    ci = concordance_ci(times, risks, events)
    assert ci.n_valid == 1000 and ci.alpha == 0.05
    assert ci == concordance_ci(times, risks, events, n=1000, alpha=0.05, seed=0)
    assert ci != concordance_ci(times, risks, events, n=1000, alpha=0.05, seed=1)
    half = concordance_ci(times, risks, events, alpha=0.5)  # the 25th and 75th percentiles
    assert half.alpha == 0.5 and ci.low < half.low <= half.high < ci.high


def test_concordance_ci_resamples_keep_the_number_of_events():
    """One event, at the earliest time, among ten cases. Resampled within the event and the
    censored groups, every resample keeps that event and so has comparable pairs (all 100
    valid). Resampled as one group, about 0.9 ** 10 = 35 % of the resamples have no event."""
    times = np.arange(1.0, 11.0)
    events = np.array([1] + [0] * 9)
    risks = np.array([0.5, 0.1, 0.9, 0.3, 0.2, 0.8, 0.4, 0.6, 0.0, 0.7])
    ci = concordance_ci(times, risks, events, n=100, seed=0)
    assert ci.n_valid == 100
    assert ci.estimate == pytest.approx(_harrell(times, risks, events)) == pytest.approx(5 / 9)
    from histomil.evaluation.stats import bootstrap_ci

    one_group = bootstrap_ci(concordance_index, times, risks, events, n=100, seed=0)
    assert 40 < one_group.n_valid < 90  # the failure this test guards against


def _warning_points_at_the_caller(rec):
    if os.environ.get("HISTOMIL_MUTATION") != "1":  # mutmut's trampolines add a stack frame
        assert rec[0].filename == __file__


def test_warnings_are_exact_and_point_at_the_caller():
    with pytest.warns(MetricWarning, match="^C-index undefined: no comparable pairs$") as rec:
        concordance_index([1, 2], [0.1, 0.2], [0, 0])
    _warning_points_at_the_caller(rec)
    with pytest.warns(
        MetricWarning,
        match=r"^duplicate time-bin edges \[ *0\. +1\. +1\. +inf\]: some bins are empty$",
    ) as rec:
        time_bins([1.0, 1.0, 1.0, 2.0], [1, 1, 1, 1], n_bins=3)
    _warning_points_at_the_caller(rec)


def test_time_bins_default_and_close_but_distinct_edges():
    times = [0.2, 0.4, 0.6, 0.8, 1.0, 50.0]
    events = [1, 1, 1, 1, 1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # edges 0.2 apart are distinct: no warning
        edges = time_bins(times, events)  # default: 4 bins, quartiles of 0.2 .. 1.0
    np.testing.assert_allclose(edges, [0.0, 0.4, 0.6, 0.8, np.inf])


def test_survival_errors_are_exact():
    with pytest.raises(ValueError, match="^time bins need at least one uncensored time$"):
        time_bins([1.0, 2.0], [0, 0])
    with pytest.raises(ValueError, match="^n_bins must be >= 1, got 0$"):
        time_bins([1.0, 2.0], [1, 0], n_bins=0)
    with pytest.raises(ValueError, match=r"^times \(2,\) and events \(1,\) differ in length$"):
        time_bins([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="^need at least two edges$"):
        discretize([1.0], [0.0])
    with pytest.raises(
        ValueError, match=r"^times \(2,\), risks \(1,\), events \(2,\) differ in length$"
    ):
        concordance_index([1, 2], [0.1], [1, 1])
    with pytest.raises(
        ValueError, match=r"^events must be 0 \(censored\) or 1 \(event observed\)$"
    ):
        concordance_ci([1, 2], [0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="^times or risks contain NaN or Inf$"):
        concordance_index([1, 2], [0.1, np.inf], [1, 1])


def test_discretize_with_two_edges_is_one_bin():
    assert discretize([3.0, -1.0, 0.0, 1e12], [0.0, np.inf]).tolist() == [0, 0, 0, 0]
    assert discretize([3.0], [0.0, 5.0]).tolist() == [0]


def test_inputs_are_read_as_floats_bool_risks_and_missing_values():
    """A high/low risk group as bools is a risk score like 1/0; a missing time or risk (None,
    as read from a sparse table) is NaN and refused with the ValueError, not a TypeError."""
    times, events = [1.0, 2.0, 3.0, 4.0, 5.0], [1, 1, 0, 1, 0]
    high = np.array([True, False, True, False, False])
    # event pairs: case 0 (high) vs 1..4: 1 + 1/2 + 1 + 1; case 1 (low) vs 2..4: 0 + 1/2 + 1/2;
    # case 3 (low) vs 4: 1/2 -> 5 / 8
    assert concordance_index(times, high, events) == pytest.approx(5 / 8)
    assert _harrell(times, high.astype(float), events) == pytest.approx(5 / 8)
    for t, r in (([1.0, None], [0.1, 0.2]), ([1.0, 2.0], [None, 0.2])):
        with pytest.raises(ValueError, match="^times or risks contain NaN or Inf$"):
            concordance_index(t, r, [1, 1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_time_bins_and_discretize_refuse_non_finite_times(bad):
    """A NaN time gave NaN edges (time_bins) or the last bin (discretize) without a word."""
    times = [1.0, 2.0, bad, 4.0]
    with pytest.raises(
        ValueError, match=r"1 survival time\(s\) are NaN or infinite \(first at index 2\)"
    ):
        time_bins(times, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="first at index 2"):
        discretize(times, [0.0, 2.0, np.inf])
    assert discretize([1.0, 2.0, 3.0], [0.0, 2.0, np.inf]).tolist() == [0, 1, 1]
