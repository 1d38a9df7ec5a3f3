from __future__ import annotations

from pathlib import Path

import pytest

from histomil.training import ConfigError, load_config
from histomil.training.config import dump_config

ISSUE_YAML = """
data: {manifest: manifest.csv, bags: bags/}
task: classification
model: {name: abmil, params: {attention_threshold: 1.0}}
objective: {name: rank_induction, params: {sigma: 1.0, margin: 1.0, weight: 1.0, max_pos: 1024, max_neg: 1024}}
train: {lr: 2.0e-4, weight_decay: 1.0e-5, max_epochs: 200, warmup_epochs: 20, patience: 7, seed: 0}
split: {scheme: monte_carlo, repeats: 10, val_fraction: 0.2, test: manifest}
"""


def test_issue_yaml_works_as_written(tmp_path: Path):
    path = tmp_path / "exp" / "config.yaml"
    path.parent.mkdir()
    path.write_text(ISSUE_YAML)
    cfg = load_config(path)
    assert cfg.data.manifest == str((path.parent / "manifest.csv").resolve())
    assert cfg.data.bags == str((path.parent / "bags").resolve())
    assert cfg.objective.params["margin"] == 1.0
    assert cfg.train.patience == 7 and cfg.split.repeats == 10 and cfg.split.n_folds == 10
    assert cfg.split.test == "manifest"
    # the dumped config is loadable again and equal
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg


@pytest.mark.parametrize(
    ("snippet", "names"),
    [
        ("train: {lr: 1.0e-3, learning_rate: 0.1}", ["train.learning_rate"]),
        ("bogus: 1\nsplit: {folds: 3}", ["bogus", "split.folds"]),
    ],
)
def test_unknown_keys_rejected_with_names(tmp_path: Path, snippet: str, names: list[str]):
    path = tmp_path / "c.yaml"
    path.write_text("data: {manifest: m.csv, bags: b/}\n" + snippet + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for name in names:
        assert name in str(err.value)


def test_invalid_values_rejected(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {manifest: m.csv, bags: b/, train_fraction: 1.5}\n")
    with pytest.raises(ConfigError, match="train_fraction"):
        load_config(path)


def test_cli_reports_unknown_keys(tmp_path: Path):
    from typer.testing import CliRunner

    from histomil.cli import app

    path = tmp_path / "c.yaml"
    path.write_text("data: {manifest: m.csv, bags: b/}\ntrain: {epochs: 3}\n")
    result = CliRunner().invoke(app, ["train", "--config", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "train.epochs" in result.output


def test_old_teacher_init_key_is_refused_naming_the_new_key(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "data: {manifest: m.csv, bags: b/}\n"
        "objective: {name: mhim_v2, params: {teacher_init: runs/abmil}}\n"
    )
    with pytest.raises(ConfigError, match=r"teacher_init moved .* objective\.baseline"):
        load_config(path)


def test_objective_baseline_resolved_against_the_config_folder(tmp_path: Path):
    (tmp_path / "runs" / "abmil").mkdir(parents=True)
    path = tmp_path / "config.yaml"
    base = "data: {manifest: m.csv, bags: b/}\nobjective: {name: mhim_v2, baseline: %s}\n"
    path.write_text(base % "runs/abmil")
    assert load_config(path).objective.baseline == str((tmp_path / "runs" / "abmil").resolve())
    path.write_text(base % "auto")
    assert load_config(path).objective.baseline == "auto"
