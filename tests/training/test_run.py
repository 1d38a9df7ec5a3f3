from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pandas as pd
import pytest
import torch
import yaml

from histomil.training import load_config, train
from histomil.training.config import ConfigError


def write_config(folder: Path, manifest: Path, **sections) -> Path:
    """A config file in ``folder`` with paths relative to it (as users write them)."""
    import os

    cfg = {
        "data": {
            "manifest": os.path.relpath(manifest, folder),
            "bags": os.path.relpath(manifest.parent / "bags", folder),
        },
        "task": "classification",
        "model": {"name": "abmil", "params": {"attention_threshold": 1.0}},
        "objective": {"name": "rank_induction", "params": {"weight": 1.0}},
        "train": {
            "max_epochs": 8,
            "warmup_epochs": 2,
            "patience": 2,
            "seed": 0,
            "lr": 5.0e-4,
            "threads": 1,
        },
        "split": {"scheme": "monte_carlo", "repeats": 2, "val_fraction": 0.25, "test": "manifest"},
        "output": {"attention_splits": ["test"]},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = folder / "config.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def run(small_cohort, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    cfg = write_config(folder / "exp", small_cohort)
    return cfg, train(cfg, folder / "out")


def test_short_run_beats_chance_and_writes_outputs(run):
    cfg, result = run
    out = result.run_dir
    assert result.metrics["test"]["auroc"]["mean"] > 0.6
    for name in ("config.yaml", "predictions.csv", "metrics.json"):
        assert (out / name).is_file()
    assert load_config(out / "config.yaml") == load_config(cfg)
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns[:5]) == ["fold", "slide_id", "split", "label", "prob"]
    assert set(preds["split"]) == {"val", "test"} and set(preds["fold"]) == {0, 1}
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("auroc", "auprc", "accuracy", "f1", "sensitivity", "specificity"):
        assert key in metrics["test"] and len(metrics["folds"]) == 2
    assert (out / "folds" / "0" / "checkpoint.pt").is_file()
    assert "val_loss" in pd.read_csv(out / "folds" / "0" / "history.csv").columns
    test_ids = preds.loc[(preds.fold == 0) & (preds.split == "test"), "slide_id"]
    with h5py.File(out / "attention" / "0" / f"{test_ids.iloc[0]}.h5") as f:
        n = f["coords"].shape[0]
        assert f["attention"].shape == (n,) and f["scores"].shape == (n,)
        assert f.attrs["split"] == "test" and f.attrs["model"] == "abmil"
        assert abs(float(f["attention"][:].sum()) - 1.0) < 1e-4


def test_test_slides_never_influence_selection(run, tmp_path):
    """Flip every test label: chosen epoch, checkpoint and threshold must not change."""
    cfg, result = run
    manifest = pd.read_csv(load_config(cfg).data.manifest)
    test = manifest["split"] == "test"
    manifest.loc[test, "label"] = 1 - manifest.loc[test, "label"]
    bad = Path(load_config(cfg).data.manifest).parent / "manifest_flipped.csv"
    manifest.to_csv(bad, index=False)
    cfg2 = write_config(tmp_path / "exp", bad, split={"repeats": 1})
    flipped = train(cfg2, tmp_path / "out")
    a, b = result.folds[0], flipped.folds[0]
    assert a["best_epoch"] == b["best_epoch"]
    assert a["threshold"] == b["threshold"]
    assert a["val"] == b["val"]
    ca = torch.load(result.run_dir / "folds/0/checkpoint.pt", weights_only=False)["model"]
    cb = torch.load(tmp_path / "out/folds/0/checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
    # ... while the test metrics did see the flipped labels
    assert a["test"]["auroc"] == pytest.approx(1 - b["test"]["auroc"])


def test_resumed_run_equals_uninterrupted(run, tmp_path):
    cfg, result = run
    copy = tmp_path / "resumed"
    shutil.copytree(result.run_dir, copy)
    # simulate an interruption during fold 1: its marker and outputs never got written
    (copy / "folds" / "1" / "result.json").unlink()
    (copy / "folds" / "1" / "predictions.csv").unlink()
    (copy / "predictions.csv").unlink()
    before = (copy / "folds" / "0" / "result.json").stat().st_mtime_ns
    resumed = train(cfg, copy)
    assert (copy / "folds" / "0" / "result.json").stat().st_mtime_ns == before  # skipped
    pd.testing.assert_frame_equal(resumed.predictions, result.predictions)
    assert resumed.metrics["test"] == result.metrics["test"]


def test_rerun_with_other_config_is_refused(run, tmp_path):
    cfg, result = run
    other = write_config(tmp_path / "exp", Path(load_config(cfg).data.manifest), train={"seed": 5})
    with pytest.raises(ValueError, match="other inputs or settings.*train.seed: 0 -> 5"):
        train(other, result.run_dir)
    with pytest.raises(ConfigError):
        write_config(tmp_path / "bad", Path("m.csv"), train={"sed": 1})
        load_config(tmp_path / "bad" / "config.yaml")


def test_survival_run_gives_c_index_above_half(survival_cohort, tmp_path):
    cfg = write_config(
        tmp_path / "exp",
        survival_cohort,
        task="survival",
        objective={"name": "bag", "params": {}},
        model={"name": "abmil", "params": {}},
        train={"max_epochs": 12, "warmup_epochs": 12, "lr": 1.0e-3, "survival_bins": 4},
        split={"scheme": "monte_carlo", "repeats": 1, "test": "manifest"},
        output={"attention": False},
    )
    result = train(cfg, tmp_path / "out")
    preds = result.predictions
    assert {"risk", "time", "event"} <= set(preds.columns)
    assert preds["slide_id"].str.startswith("case_").all()  # patient-level bags
    assert preds["slide_id"].is_unique
    assert result.metrics["test"]["c_index"]["mean"] > 0.5
