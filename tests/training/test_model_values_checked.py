"""A model parameter with a wrong *value* (not only an unknown name) stops a training run before
anything is written (the brief: checks run before anything is written)."""

from __future__ import annotations

import pytest

from histomil.training import train
from histomil.training.config import config_from_dict

from ._tiny import tiny_cohort, tiny_config


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"name": "abmil", "params": {"dropout": 2.0}}, r"model 'abmil': dropout must be in"),
        ({"name": "hipt", "params": {"local_dropout": 1.5}}, r"model 'hipt': dropout must be in"),
        (
            {"name": "transmil", "params": {"attention_threshold": 1.0}},
            r"model 'transmil': transmil pools through its class token",
        ),
    ],
)
def test_bad_model_value_fails_before_any_output(tmp_path, model, message):
    manifest = tiny_cohort(tmp_path / "data")
    cfg = config_from_dict(tiny_config(manifest, model=model))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        train(cfg, out)
    assert not out.exists()
