"""Pinned experiment-table statistics on fixed numbers: mean/SD (ddof = 1) against the statistics
module, p-values against scipy, marks and formatting by hand."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from histomil.experiments.tables import (
    decorate,
    fmt_mean_sd,
    fmt_p,
    markdown_table,
    mean_sd,
    pvalue,
    rank_marks,
    summary_frame,
    write_outputs,
)

RI = [0.912, 0.887, 0.930, 0.901, 0.895]
AB = [0.861, 0.874, 0.850, 0.869, 0.902]


def test_mean_sd_against_statistics():
    mean, sd, n = mean_sd(RI)
    assert (mean, sd, n) == (
        pytest.approx(statistics.mean(RI)),
        pytest.approx(statistics.stdev(RI)),
        5,
    )
    mean, sd, n = mean_sd([0.5, float("nan"), float("inf"), 0.7])  # only finite values
    assert (mean, sd, n) == (pytest.approx(0.6), pytest.approx(statistics.stdev([0.5, 0.7])), 2)
    m1, s1, n1 = mean_sd([0.5])
    assert m1 == 0.5 and math.isnan(s1) and n1 == 1
    m0, s0, n0 = mean_sd([])
    assert math.isnan(m0) and math.isnan(s0) and n0 == 0


def test_pvalue_against_scipy():
    ref = mannwhitneyu(RI, AB, alternative="two-sided").pvalue
    assert pvalue(RI, AB) == pytest.approx(ref)
    assert pvalue(RI, AB) == pytest.approx(pvalue(AB, RI))
    # U = 22 of 25 pairs favour RI; #{rank sets with U >= 22} = #{U <= 3} = 1 + 1 + 2 + 3, so
    # the exact two-sided p = 2 * 7 / C(10, 5)
    assert pvalue(RI, AB) == pytest.approx(14 / 252)
    assert math.isnan(pvalue([], AB))
    assert fmt_p(14 / 252) == "0.0556 ns"
    assert fmt_p(8 / 252) == "0.0317 *"
    assert fmt_p(2e-6) == "2e-06 ****"
    assert fmt_p(float("nan")) == "n/a"


def test_formatting_and_marks():
    assert fmt_mean_sd(0.83912, 0.05049) == "0.839 (0.050)"
    assert fmt_mean_sd(0.83912, float("nan"), digits=2) == "0.84"
    assert fmt_mean_sd(float("nan"), 0.1) == "n/a"
    assert rank_marks([0.8, 0.9, 0.85, float("nan"), 0.9]) == ["", "best", "second", "", "best"]
    assert rank_marks([0.3, 0.1, 0.2], higher_is_better=False) == ["", "best", "second"]
    assert rank_marks([0.5]) == ["best"]
    assert rank_marks([float("nan")]) == [""]
    assert decorate("0.9", "best") == "**0.9**"
    assert decorate("0.9", "second") == "<u>0.9</u>"
    assert decorate("0.9", "") == "0.9"
    assert markdown_table(["a", "b"], [["1", 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_summary_frame_groups_in_order_seen():
    rows = pd.DataFrame(
        {
            "method": ["ri"] * 5 + ["ab"] * 5,
            "auc": RI + AB,
            "acc": [0.9, 0.8, 0.85, float("nan"), 0.95] + [0.7] * 5,
        }
    )
    frame = summary_frame(rows, ["method"], ["auc", "acc", "missing"])
    assert frame["method"].tolist() == ["ri", "ab"]
    ri = frame.iloc[0]
    assert ri["auc_mean"] == pytest.approx(statistics.mean(RI))
    assert ri["auc_sd"] == pytest.approx(statistics.stdev(RI))
    assert ri["acc_mean"] == pytest.approx(0.875)
    assert ri["acc_sd"] == pytest.approx(statistics.stdev([0.9, 0.8, 0.85, 0.95]))
    assert math.isnan(ri["missing_mean"]) and ri["n"] == 0  # n of the last metric
    assert frame.iloc[1]["acc_sd"] == 0.0


def test_rank_marks_skip_missing_means():
    """A method without a value (None from a summary, NaN) is never marked."""
    assert rank_marks([0.9, None, 0.8]) == ["best", "", "second"]
    assert rank_marks([None, 0.7, float("nan"), 0.7], higher_is_better=False) == [
        "",
        "best",
        "",
        "best",
    ]


def test_write_outputs_are_the_rows_the_table_and_strict_json(tmp_path):
    rows = pd.DataFrame({"method": ["a", "b"], "fold": [0, 1], "auc": [0.5, float("nan")]})
    summary = {
        "auc": {"mean": np.float64(0.5), "sd": float("nan"), "n": np.int64(2)},
        "p": (np.float32(0.25), float("inf"), -float("inf")),
        1: [None, "x", {"deep": np.nan}],
    }
    write_outputs(tmp_path / "out", rows, "| t |\n", summary)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "summary.json", "table.md"]
    assert (out / "results.csv").read_text() == "method,fold,auc\na,0,0.5\nb,1,\n"
    assert (out / "table.md").read_text() == "| t |\n"
    text = (out / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    assert json.loads(text) == {
        "auc": {"mean": 0.5, "sd": None, "n": 2},
        "p": [0.25, None, None],
        "1": [None, "x", {"deep": None}],
    }
    got = json.loads(text)
    assert type(got["auc"]["n"]) is int and type(got["auc"]["mean"]) is float
