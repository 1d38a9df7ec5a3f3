from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml

from histomil.objectives import registry
from histomil.objectives.slide import BagObjective
from histomil.training import train


class _NeedsBaseline(BagObjective):
    """A bag objective that asks for a baseline and records what it received."""

    name = "probe"
    needs_baseline = True
    received: list = []

    def setup(self, model, context) -> None:
        super().setup(model, context)
        type(self).received.append(context.baseline_state)


def test_needs_baseline_trains_then_reuses_the_baseline(small_cohort, tmp_path, monkeypatch):
    original = registry.objective_class
    monkeypatch.setattr(
        registry,
        "objective_class",
        lambda name: _NeedsBaseline if name == "probe" else original(name),
    )
    folder = tmp_path / "exp"
    folder.mkdir()
    cfg = {
        "data": {
            "manifest": os.path.relpath(small_cohort, folder),
            "bags": os.path.relpath(Path(small_cohort).parent / "bags", folder),
        },
        "objective": {"name": "probe"},
        "train": {"max_epochs": 2, "warmup_epochs": 1, "patience": 1, "threads": 1},
        "split": {"scheme": "monte_carlo", "repeats": 1, "test": "manifest"},
        "output": {"attention": False},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    train(folder / "config.yaml", tmp_path / "run")
    ckpt = tmp_path / "run" / "baseline" / "folds" / "0" / "checkpoint.pt"
    assert ckpt.is_file()
    saved = torch.load(ckpt, weights_only=False)["model"]
    got = _NeedsBaseline.received[-1]
    assert got is not None and all(torch.equal(saved[k], got[k]) for k in saved)
    # a run pointing teacher_init at that run folder reuses the same baseline without training
    cfg["objective"]["params"] = {"teacher_init": str(tmp_path / "run" / "baseline")}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    train(folder / "config.yaml", tmp_path / "run2")
    assert not (tmp_path / "run2" / "baseline").exists()
    got2 = _NeedsBaseline.received[-1]
    assert all(torch.equal(saved[k], got2[k]) for k in saved)
