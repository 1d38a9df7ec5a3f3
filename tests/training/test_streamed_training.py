"""Training on a cohort over the memory budget (streamed bags) equals training in memory."""

from __future__ import annotations

import pandas as pd
import yaml

from histomil.training import train


def test_streamed_cohort_trains_like_in_memory(tmp_path, monkeypatch):
    from histomil.synth.bags import generate_bags

    manifest = generate_bags(tmp_path / "cohort", preset="tiny", seed=1, signal=5.0)
    config = {
        "data": {"manifest": str(manifest), "bags": str(manifest.parent / "bags")},
        "task": "classification",
        "model": {"name": "abmil", "params": {"hidden": 16, "attn_dim": 8}},
        "objective": {"name": "rank_induction"},
        "train": {"max_epochs": 3, "warmup_epochs": 1, "patience": 1, "seed": 0, "threads": 1},
        "split": {"scheme": "monte_carlo", "repeats": 1, "val_fraction": 0.25, "test": "manifest"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    in_memory = train(path, tmp_path / "memory")
    monkeypatch.setenv("HISTOMIL_MEMORY_GB", "1e-9")  # nothing fits: every bag is streamed
    calls = []
    from histomil.bags import stream

    real = stream.load_bag  # what materialize reads streamed features with
    monkeypatch.setattr(stream, "load_bag", lambda p: calls.append(p) or real(p))
    streamed = train(path, tmp_path / "streamed")
    assert calls, "no bag was streamed"
    pd.testing.assert_frame_equal(in_memory.predictions, streamed.predictions)
