"""The experiment registry as data, the strict ``experiment:`` section and the CLI built from it."""

from __future__ import annotations

import inspect
import re
import warnings

import pytest
import yaml
from typer.testing import CliRunner

from histomil.cli import app
from histomil.experiments import EXPERIMENTS, ExperimentOptions, run_experiment
from histomil.experiments.registry import get_spec, load
from histomil.experiments.settings import ExperimentSection, validate_section

from .conftest import write_base

runner = CliRunner()


def test_every_registered_experiment_is_in_the_cli_help():
    result = runner.invoke(app, ["experiment", "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())  # rich wraps inside a box
    for spec in EXPERIMENTS.values():
        assert f"{spec.name} ({spec.paper})" in text, spec.name


def test_cli_refuses_an_unregistered_name(base_config, tmp_path):
    result = runner.invoke(
        app, ["experiment", "nope", "--config", str(base_config), "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "unknown experiment 'nope'; valid: compare, low-data" in result.output


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_spec_points_at_its_code_and_declares_every_key_it_reads(name):
    spec = get_spec(name)
    run = load(spec)
    assert callable(run)
    source = inspect.getsource(inspect.getmodule(run))
    read = set(re.findall(r"section\.(\w+)", source))
    assert read <= set(spec.all_keys), (name, read - set(spec.all_keys))
    assert set(spec.all_keys) <= set(ExperimentSection.model_fields)


def test_every_section_key_is_read_by_some_experiment():
    declared = {k for s in EXPERIMENTS.values() for k in s.all_keys}
    assert declared == set(ExperimentSection.model_fields)


def test_misspelt_key_is_refused_not_ignored(tiny_cohort, tmp_path):
    """`gird:` used to be ignored and the default grid ran; now nothing runs."""
    cfg = write_base(tmp_path / "cfg", tiny_cohort, {"gird": [50]})
    opts = ExperimentOptions(methods=("nope",))  # the old code failed on this instead
    with pytest.raises(ValueError, match=r"unknown key experiment\.gird; valid for low-data: grid"):
        run_experiment("low-data", cfg, tmp_path / "out", opts)
    assert not (tmp_path / "out" / "runs").exists()
    result = runner.invoke(
        app,
        ["experiment", "low-data", "--config", str(cfg), "--out", str(tmp_path / "o2")],
    )
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "experiment.gird" in lines[0], result.output


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"grid": ["a", 1]}, r"experiment\.grid\.0: .*number"),
        ({"localization_key": "score"}, r"experiment\.localization_key: .*'scores' or 'attention'"),
        ({"level0_mpp": 0}, r"experiment\.level0_mpp: .*greater than 0"),
        ({"variants": "full"}, r"experiment\.variants: .*list"),
    ],
)
def test_badly_typed_values_give_one_line(section, match):
    with pytest.raises(ValueError, match=match) as info:
        validate_section(get_spec("localization"), section, "base.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("base.yaml: ")


def test_key_of_another_experiment_warns_and_is_kept():
    """One base YAML serves several experiments (configs/camelyon16/base.yaml: level0_mpp)."""
    with pytest.warns(UserWarning, match="level0_mpp is read by granularity, not by compare"):
        section = validate_section(get_spec("compare"), {"level0_mpp": 0.243, "reuse": "x"})
    assert section.level0_mpp == 0.243 and section.reuse == "x"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_section(get_spec("granularity"), {"level0_mpp": 0.243, "grid": [0, 448]})


def test_shipped_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    found = 0
    for path in sorted(root.rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        if isinstance(raw, dict) and raw.get("experiment"):
            ExperimentSection.model_validate(raw["experiment"])
            found += 1
    assert found >= 3


def test_options_an_experiment_does_not_take_are_refused(base_config, tmp_path):
    """`compare --grid ...` and `threshold --runs ...` used to be ignored silently."""
    no_grid = ExperimentOptions(grid=(0.5,), methods=("nope",))
    with pytest.raises(ValueError, match="compare has no grid"):
        run_experiment("compare", base_config, tmp_path, no_grid)
    runs = ExperimentOptions(runs=(("a", str(tmp_path)),), methods=("nope",))
    with pytest.raises(ValueError, match="--runs is for localization"):
        run_experiment("threshold", base_config, tmp_path, runs)
