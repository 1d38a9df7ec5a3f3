"""Each experiment end to end on a tiny grid: CSV, markdown table, decodable PNG, configs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from histomil.experiments import ExperimentOptions, Point, run_experiment

from .conftest import write_base


def _png_ok(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        assert im.size[0] > 100 and im.size[1] > 100


def _outputs(out: Path, figure: str) -> pd.DataFrame:
    for name in ("results.csv", "table.md", "summary.json"):
        assert (out / name).is_file(), name
    _png_ok(out / figure)
    json.loads((out / "summary.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    return pd.read_csv(out / "results.csv")


@pytest.fixture(scope="module")
def compared(base_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    opts = ExperimentOptions(methods=("abmil", "rank_induction"))
    return out, run_experiment("compare", base_config, out, opts)


def test_compare_table_csv_figure(compared):
    out, summary = compared
    rows = _outputs(out, "compare.png")
    assert sorted(rows["point"].unique()) == ["abmil", "rank_induction"]
    assert len(rows) == 4 and {"fold", "auroc", "auprc"} <= set(rows.columns)
    table = (out / "table.md").read_text()
    assert "Rank induction" in table and "**" in table
    # the p-value is the scipy Mann-Whitney U on the per-fold AUROCs of the two methods
    from scipy.stats import mannwhitneyu

    ri, ab = (rows[rows.point == n].auroc.tolist() for n in ("rank_induction", "abmil"))
    p = [m["p_auroc"] for m in summary["methods"] if m["method"] == "abmil"][0]
    assert p == pytest.approx(mannwhitneyu(ri, ab, alternative="two-sided").pvalue)
    cfg = yaml.safe_load((out / "configs" / "rank_induction.yaml").read_text())
    assert cfg["objective"]["name"] == "rank_induction"
    assert cfg["model"]["params"] == {"attention_threshold": 1.0}
    ab_cfg = yaml.safe_load((out / "configs" / "abmil.yaml").read_text())
    assert ab_cfg["split"] == cfg["split"] and ab_cfg["train"] == cfg["train"]


def test_resume_skips_finished_points(compared, base_config):
    out, _ = compared
    done = out / "runs" / "abmil" / "folds" / "0" / "result.json"
    stamp = done.stat().st_mtime_ns
    import shutil

    shutil.rmtree(out / "runs" / "rank_induction")  # as if interrupted before this point
    run_experiment(
        "compare", base_config, out, ExperimentOptions(methods=("abmil", "rank_induction"))
    )
    assert done.stat().st_mtime_ns == stamp  # finished point not retrained
    assert (out / "runs" / "rank_induction" / "metrics.json").is_file()
    assert len(pd.read_csv(out / "results.csv")) == 4


def test_sweep_task_is_picklable_for_worker_processes(base_config):
    import pickle

    from histomil.executors import Task
    from histomil.experiments.sweep import SweepOptions, load_base, resolve_point
    from histomil.training.fold import run_fold

    base = load_base(base_config)
    config = resolve_point(base, Point("p", {"data": {"train_fraction": 0.5}}), SweepOptions())
    task = pickle.loads(pickle.dumps(Task("p fold 0", run_fold, {"config": config})))
    assert task.fn is run_fold and task.kwargs["config"].data.train_fraction == 0.5


def test_low_data(base_config, tmp_path):
    opts = ExperimentOptions(grid=(50, 100), methods=("abmil", "rank_induction"), repeats=1)
    summary = run_experiment("low-data", base_config, tmp_path, opts)
    rows = _outputs(tmp_path, "low_data.png")
    assert sorted(rows.fraction.unique()) == [0.5, 1.0] and len(rows) == 4
    assert {p["fraction"] for p in summary["pvalues"]} == {0.5, 1.0}
    cfg = yaml.safe_load((tmp_path / "configs" / "abmil__frac0.5.yaml").read_text())
    assert cfg["data"]["train_fraction"] == 0.5


def test_granularity_scales_padding_by_mpp(base_config, tmp_path):
    opts = ExperimentOptions(grid=(0, 896), repeats=1)
    summary = run_experiment("granularity", base_config, tmp_path, opts)
    rows = _outputs(tmp_path, "granularity.png")
    assert set(rows.method) == {"rank_induction", "attention_induction"} and len(rows) == 4
    assert summary["level0_mpp"] == pytest.approx(0.243)
    cfg = yaml.safe_load((tmp_path / "configs" / "rank_induction__pad896.yaml").read_text())
    assert cfg["data"]["padding_px"] == pytest.approx(896 * 0.25 / 0.243)


def test_annotation_fraction_with_baseline(base_config, tmp_path):
    opts = ExperimentOptions(grid=(0.5, 1.0), repeats=1)
    run_experiment("annotation-fraction", base_config, tmp_path, opts)
    rows = _outputs(tmp_path, "annotation_fraction.png")
    assert sorted(rows.point.unique()) == [
        "abmil__ann0",
        "rank_induction__ann0.5",
        "rank_induction__ann1",
    ]
    cfg = yaml.safe_load((tmp_path / "configs" / "rank_induction__ann0.5.yaml").read_text())
    assert cfg["data"]["annotated_fraction"] == 0.5


def test_threshold_nonlesion_attention(base_config, tmp_path):
    opts = ExperimentOptions(grid=(0, 5), repeats=1)
    summary = run_experiment("threshold", base_config, tmp_path, opts)
    rows = _outputs(tmp_path, "threshold.png")
    assert set(rows["T"]) == {0.0, 5.0} and "nonlesion_attention" in rows
    slides = pd.read_csv(tmp_path / "nonlesion_attention.csv")
    assert len(slides) > 0 and slides.nonlesion_attention.between(0, 1 + 1e-6).all()
    by_t = {r["T"]: r for r in summary["nonlesion_attention"]}
    # thresholding moves pooling weight off (many) non-lesion patches or leaves it; never adds
    assert by_t[5.0]["n_slides"] == by_t[0.0]["n_slides"] > 0
    cfg = yaml.safe_load((tmp_path / "configs" / "rank_induction__T5.yaml").read_text())
    assert cfg["model"]["params"]["attention_threshold"] == 5.0
    # p-values against T = 0 (the paper's reference condition) on the per-fold values
    assert "P vs T = 0" in (tmp_path / "table.md").read_text()
    p5 = [p for p in summary["pvalues"] if p["T"] == 5.0][0]["p_auroc"]
    assert p5 != p5 or 0 <= p5 <= 1  # NaN when one fold per point leaves it undefined


def test_localization_from_existing_runs(compared, base_config, tmp_path):
    out, _ = compared
    runs = (("abmil", str(out / "runs" / "abmil")), ("rank", str(out / "runs" / "rank_induction")))
    opts = ExperimentOptions(runs=runs, grid=(5, 100))
    run_experiment("localization", base_config, tmp_path, opts)
    rows = _outputs(tmp_path, "localization.png")
    assert set(rows.method) == {"abmil", "rank"} and set(rows.alpha) == {5.0, 100.0}
    assert rows[["iou", "dice", "pointing"]].stack().between(0, 1).all()
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_mhim_ablation_shares_one_baseline(base_config, tmp_path):
    opts = ExperimentOptions(grid=("baseline", "rhsm", "full"), repeats=1)
    run_experiment("mhim-ablation", base_config, tmp_path, opts)
    rows = _outputs(tmp_path, "mhim_ablation.png")
    assert list(rows.variant) == ["baseline", "rhsm", "full"]
    cfg = yaml.safe_load((tmp_path / "configs" / "abmil__rhsm.yaml").read_text())
    params = cfg["objective"]["params"]
    assert cfg["objective"]["name"] == "mhim_v2"
    assert cfg["objective"]["baseline"] == str(tmp_path / "runs" / "abmil__baseline")
    assert params["recycle"] == {"enabled": False} and params["consistency"] == {"alpha": 0.0}
    assert not (tmp_path / "runs" / "abmil__full" / "baseline").exists()  # no second baseline
    table = (tmp_path / "table.md").read_text()
    assert "Table 7" in table and "Table 10" not in table  # no table of baseline + full only
    assert "Baseline:" not in table  # the plain bag objective needs no note


def test_mhim_rank_ablation_table_names_its_rank_induction_baseline():
    from histomil.experiments.methods import Method
    from histomil.experiments.mhim import table
    from histomil.experiments.tables import summary_frame

    rows = pd.DataFrame(
        {"student": "abmil", "variant": ["baseline", "full"] * 2, "fold": [0, 0, 1, 1],
         "auroc": [0.9, 0.92, 0.8, 0.86], "auprc": [0.8, 0.85, 0.7, 0.75]}
    )  # fmt: skip
    summ = summary_frame(rows, ["student", "variant"], ["auroc", "auprc"])
    md, _ = table(
        rows,
        summ,
        [Method("abmil", {"name": "abmil"}, {"name": "bag"})],
        ["full"],
        "rank_induction",
    )
    assert md.endswith(
        "Baseline: the student trained with `rank_induction` (the rank loss of every variant), "
        "which is also every variant's teacher.\n"
    )
    assert "| AB-MIL | full | **0.890 (0.042)** | 0.800 (0.071) | +0.040 |" in md


def test_bad_inputs_raise_clearly(base_config, tiny_cohort, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        run_experiment("compare", base_config, tmp_path, ExperimentOptions(methods=("nope",)))
    with pytest.raises(ValueError, match="unknown MHIM variant"):
        run_experiment("mhim-ablation", base_config, tmp_path, ExperimentOptions(grid=("x",)))
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("nope", base_config, tmp_path)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run_experiment("low-data", base_config, tmp_path, ExperimentOptions(grid=(150,)))
    bad = write_base(tmp_path / "bad", tiny_cohort, {"level0_mpp": None})
    text = bad.read_text().replace("max_epochs", "max_epoch")
    bad.write_text(text)
    with pytest.raises(ValueError, match="max_epoch"):
        run_experiment("compare", bad, tmp_path / "o", ExperimentOptions(methods=("abmil",)))


def test_identical_point_is_reused_from_another_experiment(compared, tiny_cohort, tmp_path):
    out, _ = compared
    base = write_base(tmp_path / "cfg", tiny_cohort, {"reuse": [str(out)]})
    # rank induction at T = 1 is the compare run's rank_induction point; T = 0.5 is new
    run_experiment("threshold", base, tmp_path / "thr", ExperimentOptions(grid=(0.5, 1)))
    reused = tmp_path / "thr" / "runs" / "rank_induction__T1"
    assert (reused / "reused_from.txt").read_text().strip() == str(out / "runs" / "rank_induction")
    assert not (tmp_path / "thr" / "runs" / "rank_induction__T0.5" / "reused_from.txt").exists()
    rows = pd.read_csv(tmp_path / "thr" / "results.csv")
    ref = pd.read_csv(out / "results.csv")
    got = rows[rows["T"] == 1.0].sort_values("fold").auroc.tolist()
    assert got == ref[ref.point == "rank_induction"].sort_values("fold").auroc.tolist()
    # a different fold count is a different config: nothing to reuse
    run_experiment("threshold", base, tmp_path / "thr1", ExperimentOptions(grid=(1,), repeats=1))
    assert not (tmp_path / "thr1" / "runs" / "rank_induction__T1" / "reused_from.txt").exists()
