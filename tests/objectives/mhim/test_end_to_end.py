"""A tiny two-stage run through the trainer: baseline trained first, then MHIM-v2 from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

training = pytest.importorskip("histomil.training")
synth = pytest.importorskip("histomil.synth.bags")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    return synth.generate_bags(out, "tiny", seed=0)


def _config(manifest: Path, objective: dict) -> dict:
    return {
        "data": {"manifest": str(manifest), "bags": str(manifest.parent / "bags")},
        "model": {"name": "abmil", "params": {"hidden": 16, "attn_dim": 8}},
        "objective": objective,
        "train": {"max_epochs": 2, "warmup_epochs": 1, "patience": 1, "seed": 0},
        "split": {"scheme": "monte_carlo", "repeats": 1, "val_fraction": 0.3, "test": "manifest"},
        "output": {"attention": False, "save_checkpoints": True},
    }


def test_mhim_trains_its_baseline_then_itself_and_reuses_it(tiny: Path, tmp_path: Path) -> None:
    if not hasattr(training, "train"):
        pytest.skip("the trainer has not landed")
    from histomil.training.config import config_from_dict

    # two stages in one command: baseline auto -> the baseline is trained first
    cfg = config_from_dict(_config(tiny, {"name": "mhim_v2", "baseline": "auto"}))
    training.train(cfg, tmp_path / "run")
    baseline = tmp_path / "run" / "baseline"
    assert (baseline / "folds" / "0" / "checkpoint.pt").is_file()
    fold = tmp_path / "run" / "folds" / "0"
    result = json.loads((fold / "result.json").read_text())
    assert "auroc" in result["test"]
    history = (fold / "history.csv").read_text()
    assert "train_con" in history and "train_beta_h" in history
    # an existing run's checkpoints as the teacher (no new baseline)
    objective = {"name": "mhim_v1", "baseline": str(baseline)}
    training.train(config_from_dict(_config(tiny, objective)), tmp_path / "v1")
    assert not (tmp_path / "v1" / "baseline").exists()
    assert (tmp_path / "v1" / "folds" / "0" / "result.json").is_file()
