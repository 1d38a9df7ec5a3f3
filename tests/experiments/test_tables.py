"""Table helpers against numpy/scipy on known inputs, and the CLI's parsing and errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from histomil.experiments.sweep import deep_merge
from histomil.experiments.tables import (
    decorate,
    fmt_mean_sd,
    fmt_p,
    mean_sd,
    pvalue,
    rank_marks,
    summary_frame,
)


def test_mean_sd_matches_numpy_sample_sd():
    v = [0.8, 0.9, 0.75, float("nan")]
    mean, sd, n = mean_sd(v)
    assert n == 3 and mean == pytest.approx(np.mean(v[:3]))
    assert sd == pytest.approx(np.std(v[:3], ddof=1))
    assert math.isnan(mean_sd([0.5])[1]) and mean_sd([])[2] == 0
    assert fmt_mean_sd(0.8391, 0.0504) == "0.839 (0.050)" and fmt_mean_sd(math.nan, 1) == "n/a"


def test_pvalue_matches_scipy_and_stars():
    from scipy.stats import mannwhitneyu

    a, b = [0.81, 0.84, 0.86, 0.83, 0.85], [0.70, 0.74, 0.66, 0.79, 0.72]
    expected = mannwhitneyu(a, b, alternative="two-sided").pvalue
    assert pvalue(a, b) == pytest.approx(expected)
    assert fmt_p(expected).endswith(" *") and fmt_p(0.5).endswith("ns")
    assert math.isnan(pvalue([], b)) and fmt_p(math.nan) == "n/a"


def test_rank_marks_best_second_and_ties():
    assert rank_marks([0.7, 0.9, 0.8]) == ["", "best", "second"]
    assert rank_marks([0.9, 0.9, 0.8]) == ["best", "best", "second"]
    assert rank_marks([0.2, math.nan, 0.1], higher_is_better=False) == ["second", "", "best"]
    assert decorate("x", "best") == "**x**" and decorate("x", "second") == "<u>x</u>"


def test_summary_frame_groups_in_order():
    rows = pd.DataFrame(
        {"method": ["b", "b", "a", "a"], "auroc": [0.6, 0.8, 0.5, 0.7], "auprc": [1, 1, 0, 0]}
    )
    s = summary_frame(rows, ["method"], ["auroc", "auprc"])
    assert list(s.method) == ["b", "a"]
    assert s.auroc_mean.tolist() == pytest.approx([0.7, 0.6])
    assert s.auroc_sd[0] == pytest.approx(np.std([0.6, 0.8], ddof=1)) and s.n.tolist() == [2, 2]


def test_deep_merge_leaves_inputs():
    base = {"data": {"manifest": "m", "train_fraction": 1.0}, "train": {"seed": 0}}
    merged = deep_merge(base, {"data": {"train_fraction": 0.2}})
    assert merged["data"] == {"manifest": "m", "train_fraction": 0.2}
    assert base["data"]["train_fraction"] == 1.0


def test_cli_parses_and_reports_errors(base_config, tmp_path):
    from histomil.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["experiment", "nope", "--config", str(base_config), "--out", "x"])
    assert res.exit_code == 1 and "unknown experiment" in res.output
    args = ["experiment", "compare", "--config", str(base_config), "--out", str(tmp_path)]
    res = runner.invoke(app, [*args, "--methods", "abmil,nope"])
    assert res.exit_code == 1 and "unknown method" in res.output
    res = runner.invoke(app, [*args.copy()[:1], "localization", *args[2:], "--runs", "bad"])
    assert res.exit_code != 0
