"""A tiny synthetic cohort and a 2-fold, 2-epoch base config shared by the experiment tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """6 train / 2 val / 4 test slides of ~120 patches, 16-d features (preset ``tiny``)."""
    from histomil.synth.bags import generate_bags

    return generate_bags(tmp_path_factory.mktemp("tiny"), preset="tiny", seed=0)


def write_base(folder: Path, manifest: Path, experiment: dict | None = None) -> Path:
    """An experiment YAML next to the tests' outputs (paths relative to it)."""
    import os

    cfg = {
        "data": {
            "manifest": os.path.relpath(manifest, folder),
            "bags": os.path.relpath(manifest.parent / "bags", folder),
        },
        "train": {"max_epochs": 2, "warmup_epochs": 0, "patience": 1, "lr": 1e-3, "threads": 1},
        "split": {"scheme": "monte_carlo", "repeats": 2, "val_fraction": 0.25, "test": "manifest"},
        "output": {"attention_splits": ["test"]},
    }
    if experiment:
        cfg["experiment"] = experiment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def base_config(tiny_cohort, tmp_path_factory) -> Path:
    return write_base(tmp_path_factory.mktemp("cfg"), tiny_cohort)
