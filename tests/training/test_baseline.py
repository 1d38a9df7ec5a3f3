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
    # a run pointing objective.baseline at that run folder reuses it without training
    cfg["objective"]["baseline"] = str(tmp_path / "run" / "baseline")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    train(folder / "config.yaml", tmp_path / "run2")
    assert not (tmp_path / "run2" / "baseline").exists()
    got2 = _NeedsBaseline.received[-1]
    assert all(torch.equal(saved[k], got2[k]) for k in saved)


class _RankBaseline(_NeedsBaseline):
    """Asks for its baseline to be trained with rank induction (not the default ``bag``)."""

    name = "probe_rank"

    @classmethod
    def baseline_objective(cls, params):
        return {"name": "rank_induction", "params": {"weight": 0.5}}


def test_the_objective_chooses_how_its_baseline_is_trained(small_cohort, tmp_path, monkeypatch):
    from histomil.training import baseline as baseline_mod
    from histomil.training.config import config_from_dict

    original = registry.objective_class
    monkeypatch.setattr(
        registry,
        "objective_class",
        lambda name: _RankBaseline if name == "probe_rank" else original(name),
    )
    seen = []
    real_run_fold = baseline_mod.run_fold

    def spy(config, split, run_dir, **kw):
        seen.append((config.objective.name, dict(config.objective.params), Path(run_dir).name))
        return real_run_fold(config, split, run_dir, **kw)

    monkeypatch.setattr(baseline_mod, "run_fold", spy)
    cfg = {
        "data": {"manifest": str(small_cohort), "bags": str(Path(small_cohort).parent / "bags")},
        "objective": {"name": "probe_rank"},
        "train": {"max_epochs": 1, "warmup_epochs": 0, "patience": 1, "threads": 1},
        "split": {"scheme": "monte_carlo", "repeats": 1, "test": "manifest"},
        "output": {"attention": False},
    }
    train(config_from_dict(cfg), tmp_path / "run")
    assert seen[0] == ("rank_induction", {"weight": 0.5}, "baseline")
    assert seen[1][0] == "probe_rank" and seen[1][2] == "run"


def test_a_baseline_for_an_objective_without_one_is_refused(small_cohort, tmp_path):
    import pytest

    from histomil.training.config import config_from_dict

    cfg = {
        "data": {"manifest": str(small_cohort), "bags": str(Path(small_cohort).parent / "bags")},
        "objective": {"name": "bag", "baseline": "auto"},
        "split": {"scheme": "monte_carlo", "repeats": 1, "test": "manifest"},
    }
    with pytest.raises(ValueError, match="objective.baseline is set but objective 'bag'"):
        train(config_from_dict(cfg), tmp_path / "run")
    assert not (tmp_path / "run").exists()
