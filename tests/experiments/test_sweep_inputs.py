"""Issue 14: a sweep checks every point's inputs before writing anything, and never skips or
reuses a finished point whose bag files changed since."""

from __future__ import annotations

import pytest

from histomil.experiments.sweep import BaseConfig, Point, SweepError, SweepOptions, run_sweep

from ..training._tiny import tiny_cohort, tiny_config, write_tiny_bag


def test_finished_point_with_a_changed_bag_is_not_skipped(tmp_path):
    manifest = tiny_cohort(tmp_path / "c")
    base = BaseConfig(tiny_config(manifest, split={"repeats": 1}), str(tmp_path))
    points = [Point("abmil", {})]
    run_sweep(base, points, tmp_path / "exp", SweepOptions())
    done = tmp_path / "exp" / "runs" / "abmil" / "folds" / "0" / "result.json"
    stamp = done.stat().st_mtime_ns
    run_sweep(base, points, tmp_path / "exp", SweepOptions())  # unchanged: skipped
    assert done.stat().st_mtime_ns == stamp
    write_tiny_bag(tmp_path / "c" / "bags" / "s05.h5", 1, seed=42)
    with pytest.raises(SweepError, match="bag s05"):
        run_sweep(base, points, tmp_path / "exp", SweepOptions())


def test_bad_inputs_fail_before_any_point_writes(tmp_path):
    labels = [i % 2 for i in range(24)]
    labels[3] = "tumour?"
    manifest = tiny_cohort(tmp_path / "c", labels=labels)
    base = BaseConfig(tiny_config(manifest), str(tmp_path))
    with pytest.raises(ValueError, match=r"line 5 \(slide s03\): 'tumour\?'"):
        run_sweep(base, [Point("a", {}), Point("b", {})], tmp_path / "exp", SweepOptions())
    assert not (tmp_path / "exp").exists()
