"""Issue 14: a sweep checks every point's inputs before writing anything, and never skips or
reuses a finished point whose bag files changed since."""

from __future__ import annotations

import pandas as pd
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


def test_sweep_submits_one_task_per_fold_of_every_point(tmp_path, monkeypatch):
    """Folds, not points, are the executor's tasks (no idle worker while one point's folds run
    serially); a point whose fold failed gets no run-level outputs, the others do, and the
    folds equal a plain ``train`` of the same config."""
    import histomil.experiments.sweep as sweep
    import histomil.training.run as run_mod
    from histomil.training import train
    from histomil.training.config import config_from_dict

    manifest = tiny_cohort(tmp_path / "c")
    raw = tiny_config(manifest, split={"repeats": 2})
    base = BaseConfig(raw, str(tmp_path))
    submitted = []
    real_run_tasks, real_run_fold = sweep.run_tasks, run_mod.run_fold

    def recording(tasks, executor, description=""):
        submitted.append([t.key for t in tasks])
        return real_run_tasks(tasks, executor, description=description)

    def failing(config, split, run_dir):
        if run_dir.endswith("/b") and split.fold == 1:
            raise RuntimeError("disk full")
        return real_run_fold(config, split, run_dir)

    monkeypatch.setattr(sweep, "run_tasks", recording)
    monkeypatch.setattr(run_mod, "run_fold", failing)
    points = [Point("a", {}), Point("b", {"train": {"seed": 3}})]
    with pytest.raises(SweepError, match=r"1 fold\(s\) failed \(b fold 1: RuntimeError: disk full"):
        run_sweep(base, points, tmp_path / "exp", SweepOptions())
    assert submitted == [["a fold 0", "a fold 1", "b fold 0", "b fold 1"]]
    runs = tmp_path / "exp" / "runs"
    assert (runs / "a" / "metrics.json").is_file()
    assert not (runs / "b" / "metrics.json").exists()
    assert (runs / "b" / "folds" / "0" / "result.json").is_file()
    # rerun: only the failed fold is submitted, then point b is finished
    monkeypatch.setattr(run_mod, "run_fold", real_run_fold)
    run_sweep(base, points, tmp_path / "exp", SweepOptions())
    assert submitted[1] == ["b fold 1"]
    assert (runs / "b" / "metrics.json").is_file()
    alone = train(config_from_dict(raw, base_dir=str(tmp_path)), tmp_path / "alone")
    swept = pd.read_csv(runs / "a" / "predictions.csv")
    pd.testing.assert_frame_equal(swept, alone.predictions.reset_index(drop=True))


def test_stale_point_is_refused_before_any_point_trains(tmp_path, monkeypatch):
    import histomil.experiments.sweep as sweep

    manifest = tiny_cohort(tmp_path / "c")
    base = BaseConfig(tiny_config(manifest, split={"repeats": 1}), str(tmp_path))
    run_sweep(base, [Point("b", {})], tmp_path / "exp", SweepOptions())
    # point b's finished fold was made with another model width: changing it is refused, and
    # point a (new, listed first) is neither written nor trained
    calls = []
    monkeypatch.setattr(sweep, "run_tasks", lambda *a, **k: calls.append(a) or [])
    wider = {"model": {"name": "abmil", "params": {"hidden": 32, "attn_dim": 8}}}
    with pytest.raises(SweepError, match=r"point b: .*hidden.*nothing was trained"):
        run_sweep(base, [Point("a", {}), Point("b", wider)], tmp_path / "exp", SweepOptions())
    assert calls == [] and not (tmp_path / "exp" / "runs" / "a").exists()
    assert not (tmp_path / "exp" / "configs" / "a.yaml").exists()
