"""A run records its model's and objective's settings with the defaults filled in, so a default
changed by a later histomil is refused on resume instead of mixing folds made with two values
(the config alone records only the settings given)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import pytest

from histomil.models import model_class, names
from histomil.models.abmil import ABMIL
from histomil.objectives import objective_class, objective_names
from histomil.objectives.mhim.config import ConsistencyConfig, MaskingConfig, RankConfig
from histomil.provenance import effective_params
from histomil.training import train
from histomil.training.cohort import resolved_settings
from histomil.training.config import config_from_dict
from histomil.training.run import RunMismatchError

from ._tiny import tiny_cohort, tiny_config


def test_effective_params_fill_defaults_and_keep_given_values():
    def factory(in_dim, n_classes, hidden=512, gated=True, *args, scale=(1, 2), **kwargs):
        return None

    got = effective_params(factory, {"hidden": 64}, skip=("in_dim",))
    assert got == {"hidden": 64, "gated": True, "scale": [1, 2]}  # n_classes is required


@pytest.mark.parametrize("name", names())
def test_every_model_records_its_defaults(name):
    got = effective_params(model_class(name), {}, skip=("in_dim", "n_classes"))
    assert json.loads(json.dumps(got)) == got
    assert "dropout" in got and "in_dim" not in got and "n_classes" not in got


@pytest.mark.parametrize("name", objective_names())
def test_every_objective_records_its_settings(name):
    got = objective_class(name).resolved_params({})
    assert json.loads(json.dumps(got)) == got


def test_mhim_groups_are_resolved_with_the_class_defaults():
    v2 = objective_class("mhim_v2").resolved_params({"masking": {"beta_h": 0.05}})
    v1 = objective_class("mhim_v1").resolved_params({})
    assert v2["masking"]["beta_h"] == 0.05
    assert v2["masking"]["beta_l"] == MaskingConfig().beta_l
    assert v2["teacher"]["momentum"] == 0.9999 and v2["recycle"]["enabled"] is True
    # MHIM-v1's own defaults, not the dataclass's
    assert v1["masking"]["scoring"] == "attention" and v1["recycle"]["enabled"] is False


def test_mhim_resolved_params_name_every_group_and_survival_alpha():
    got = objective_class("mhim_v2").resolved_params(
        {"consistency": {"alpha": 0.3}, "rank": {"weight": 1.0}, "survival_alpha": 0.25}
    )
    assert set(got) == {"masking", "teacher", "recycle", "consistency", "rank", "survival_alpha"}
    assert got["consistency"] == {**asdict(ConsistencyConfig()), "alpha": 0.3}
    assert got["rank"] == {**asdict(RankConfig()), "weight": 1.0}
    assert got["survival_alpha"] == 0.25


def _config(tmp_path, **params):
    manifest = tiny_cohort(tmp_path / "c")
    raw = tiny_config(manifest)
    raw["model"]["params"].update(params)
    return config_from_dict(raw, base_dir=str(tmp_path))


def test_resolved_settings_hold_given_and_default_values(tmp_path):
    got = resolved_settings(_config(tmp_path))
    assert got["model"]["hidden"] == 16 and got["model"]["dropout"] == 0.25
    assert got["objective"] == {"survival_alpha": 0.0}


def test_resume_after_a_default_changed_is_refused(tmp_path, monkeypatch):
    config = _config(tmp_path)
    train(config, tmp_path / "run", folds=[0])
    recorded = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert recorded["params"]["resolved"]["model"]["gated"] is True
    # a later histomil makes AB-MIL non-gated by default; the config (which never named
    # ``gated``) is unchanged, but fold 1 would be a different model than fold 0
    defaults = list(ABMIL.__init__.__defaults__)
    defaults[2] = False  # hidden, attn_dim, gated, ...
    monkeypatch.setattr(ABMIL.__init__, "__defaults__", tuple(defaults))
    with pytest.raises(RunMismatchError, match=r"params\.resolved\.model\.gated: true -> false"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "folds" / "1").exists()


def test_run_recorded_before_resolved_settings_resumes_with_a_warning(tmp_path, caplog):
    config = _config(tmp_path)
    train(config, tmp_path / "run", folds=[0])
    path = tmp_path / "run" / "provenance.json"
    recorded = json.loads(path.read_text())
    del recorded["params"]["resolved"]  # as an older histomil wrote it
    path.write_text(json.dumps(recorded))
    with caplog.at_level(logging.WARNING, logger="histomil.training.run"):
        result = train(config, tmp_path / "run")
    assert [f["fold"] for f in result.folds] == [0, 1]
    assert "default changed since" in caplog.text
    # the resumed run now records them
    assert "resolved" in json.loads(path.read_text())["params"]
