"""``train.precision: bfloat16``: autocast training step, float32 weights and evaluation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.objectives import TrainContext, create_objective
from histomil.training import train
from histomil.training.config import ConfigError, TrainSettings, config_from_dict
from histomil.training.trainer import _autocast, fit

from .test_run import write_config


def _bags(n: int, seed: int) -> list[Bag]:
    gen = torch.Generator().manual_seed(seed)
    bags = []
    for i in range(n):
        label = i % 2
        x = torch.randn(300, 64, generator=gen)
        lesion = torch.zeros(300, dtype=torch.long)
        if label:
            lesion[:15] = 1
            x[:15, :8] += 3.0
        bags.append(Bag(slide_id=f"s{i}", features=x, label=label, patch_labels=lesion))
    return bags


def _gradients(precision: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("abmil", 64, 1, dropout=0.0)
    objective = create_objective("rank_induction")
    objective.setup(model, TrainContext(0, "classification", 1, "", 0))
    bag = _bags(2, 1)[1]
    with _autocast(torch.device("cpu"), precision):
        loss = objective(model, bag).loss
    assert loss.dtype == torch.float32  # losses are float32 in both modes
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_bfloat16_step_is_close_to_float32_but_not_identical():
    full, half = _gradients("float32"), _gradients("bfloat16")
    assert full.keys() == half.keys()
    # the attention score bias has a zero gradient in exact arithmetic (softmax is shift
    # invariant): only rounding noise is left there, so it is not compared
    rel = [
        float((half[k] - full[k]).norm() / full[k].norm()) for k in full if full[k].norm() > 1e-4
    ]
    assert max(rel) < 0.05, rel  # bfloat16 matmuls with float32 accumulation
    assert max(rel) > 1e-6, rel  # ... and autocast really ran them in bfloat16
    assert all(g.dtype == torch.float32 for g in half.values())


def test_bfloat16_fit_learns_and_keeps_float32_state():
    train_bags, val_bags = _bags(24, 2), _bags(8, 3)
    torch.manual_seed(0)
    model = create_model("abmil", 64, 1)
    objective = create_objective("rank_induction")
    objective.setup(model, TrainContext(0, "classification", 1, "", 0))
    settings = TrainSettings(
        max_epochs=6, warmup_epochs=6, patience=6, lr=1e-3, precision="bfloat16"
    )
    result = fit(model, objective, train_bags, val_bags, settings, "classification", 0)
    assert all(v.dtype == torch.float32 for v in result.state.values() if v.is_floating_point())
    losses = [row["train_total"] for row in result.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert result.history[result.best_epoch]["val_auroc"] > 0.9


def test_precision_setting_is_validated():
    base = {"data": {"manifest": "m.csv", "bags": "b"}}
    cfg = config_from_dict({**base, "train": {"precision": "bfloat16"}})
    assert cfg.train.precision == "bfloat16"
    assert config_from_dict(base).train.precision == "float32"
    with pytest.raises(ConfigError, match="precision"):
        config_from_dict({**base, "train": {"precision": "float16"}})


def test_run_written_before_the_setting_existed_resumes(small_cohort, tmp_path):
    cfg = write_config(tmp_path / "exp", small_cohort, split={"repeats": 1})
    first = train(cfg, tmp_path / "out")
    saved = tmp_path / "out" / "config.yaml"
    raw = yaml.safe_load(saved.read_text())
    del raw["train"]["precision"]  # what an older histomil wrote
    saved.write_text(yaml.safe_dump(raw, sort_keys=False))
    again = train(cfg, tmp_path / "out")  # default precision: the same run, resumed
    assert again.metrics["test"] == first.metrics["test"]
    other = write_config(tmp_path / "exp2", small_cohort, split={"repeats": 1})
    raw = yaml.safe_load(other.read_text())
    raw["train"]["precision"] = "bfloat16"
    other.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"precision: \"float32\" -> \"bfloat16\""):
        train(other, tmp_path / "out")
    shutil.rmtree(tmp_path / "out")
