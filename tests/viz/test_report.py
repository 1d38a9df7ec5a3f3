"""HTML report: self-contained, metrics from predictions.csv, experiment directories."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histomil.viz._metrics import decisions, metric_table
from histomil.viz.attention import VizError
from histomil.viz.report import ReportOptions, build_report, pick_heatmap_slides

FAST = ReportOptions(n_boot=100)


def assert_self_contained(html: str) -> None:
    # base64 payloads can spell "http" by chance: check the markup with them removed
    markup = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)
    assert "http" not in markup.lower() and "file:" not in markup.lower()
    srcs = re.findall(r'src\s*=\s*"([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for href in re.findall(r'href\s*=\s*"([^"]*)"', html):  # anchors or relative run reports
        assert href.startswith("#") or (href.endswith("report.html") and ":" not in href), href
    assert "<link" not in html and "@import" not in html and "url(" not in html


@pytest.fixture(scope="module")
def run_report(run_dir):
    return build_report(run_dir, run_dir / "out" / "report.html", FAST)


def test_run_report_sections_and_embedding(run_report, run_dir):
    html = run_report.read_text()
    assert_self_contained(html)
    for anchor in ("metrics", "curves", "heatmaps", "history", "predictions", "config"):
        assert f'id="{anchor}"' in html
    assert "Most confident positive" in html and "Least confident negative" in html
    assert "dim: 128" in html  # the resolved config
    assert html.count("<img") >= 1 + 4 + 1  # curves, 4 heatmaps (+ montage), history
    assert "95% bootstrap CI" in html and "auroc" in html


def test_embedded_images_decode(run_report):
    import base64
    import io

    html = run_report.read_text()
    for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html):
        with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
            img.load()
            assert img.size[0] > 50


def test_heatmap_picks():
    df = pd.DataFrame({"fold": 0, "slide_id": list("abcd"), "label": [1, 1, 0, 0],
                       "prob": [0.9, 0.6, 0.1, 0.4], "split": "test"})  # fmt: skip
    picks = {why: row["slide_id"] for why, row in pick_heatmap_slides(df)}
    assert picks == {"most confident positive": "a", "least confident positive": "b",
                     "most confident negative": "c", "least confident negative": "d"}  # fmt: skip


def test_metrics_match_sklearn_and_threshold_comes_from_validation():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.3 * y + rng.random(60) * 0.7, 0, 1)
    val = pd.DataFrame({"fold": 0, "slide_id": [f"v{i}" for i in range(4)], "label": [0, 0, 1, 1],
                        "prob": [0.1, 0.2, 0.8, 0.9], "split": "val"})  # fmt: skip
    test = pd.DataFrame({"fold": 0, "slide_id": [f"t{i}" for i in range(60)], "label": y,
                         "prob": p, "split": "test"})  # fmt: skip
    df = pd.concat([val, test], ignore_index=True)
    rows = {r.name: r for r in metric_table(df, n_boot=200)}
    assert rows["auroc"].estimate == pytest.approx(roc_auc_score(y, p))
    assert rows["auprc"].estimate == pytest.approx(average_precision_score(y, p))
    assert rows["auroc"].ci_low <= rows["auroc"].estimate <= rows["auroc"].ci_high
    # Youden on val picks 0.8: a test prob of 0.7 is negative whatever the test labels are
    yhat = decisions(df)
    assert (yhat[df["prob"] >= 0.8] == 1).all() and (yhat[df["prob"] < 0.8] == 0).all()


def test_experiment_report(tmp_path, run_dir):
    exp = tmp_path / "exp"
    (exp / "configs").mkdir(parents=True)
    (exp / "configs" / "abmil.yaml").write_text("model: abmil\n")
    pd.DataFrame({"method": ["abmil", "rank"], "auroc": [0.81, 0.9]}).to_csv(
        exp / "results.csv", index=False
    )
    (exp / "table.md").write_text(
        "| method | AUROC |\n|---|---|\n| abmil | 0.81 |\n| rank | 0.90 |\n"
    )
    Image.new("RGB", (120, 80), "red").save(exp / "comparison.png")
    out = build_report(exp, None, FAST)
    html = out.read_text()
    assert out == exp / "report.html"
    assert_self_contained(html)
    assert "<th>AUROC</th>" in html and "<td>0.90</td>" in html  # markdown table rendered
    assert "<figcaption>comparison</figcaption>" in html and "abmil.yaml" in html
    with pytest.raises(VizError, match="neither a run"):
        build_report(tmp_path / "exp" / "configs")


def test_survival_and_multiclass_runs(tmp_path):
    rng = np.random.default_rng(0)
    surv = tmp_path / "surv"
    surv.mkdir()
    t = rng.uniform(1, 100, 40)
    pd.DataFrame({"fold": 0, "slide_id": [f"p{i}" for i in range(40)], "risk": -t + rng.normal(0, 5, 40),
                  "time": t, "event": rng.integers(0, 2, 40), "split": "test"}).to_csv(
        surv / "predictions.csv", index=False)  # fmt: skip
    html = build_report(surv, None, FAST).read_text()
    assert "c_index" in html and 'id="curves"' not in html
    multi = tmp_path / "multi"
    multi.mkdir()
    y = rng.integers(0, 3, 30)
    probs = rng.dirichlet(np.ones(3), 30)
    df = pd.DataFrame({"fold": 0, "slide_id": [f"s{i}" for i in range(30)], "label": y,
                       "prob": probs.max(1), "split": "test"})  # fmt: skip
    for c in range(3):
        df[f"prob_{c}"] = probs[:, c]
    df.to_csv(multi / "predictions.csv", index=False)
    html = build_report(multi, None, FAST).read_text()
    assert "<td>auroc</td>" in html and "<td>f1</td>" in html


def test_report_metrics_are_the_evaluation_modules():
    """One implementation: the report's per-fold values are evaluation's, and the pooled CIs are
    one bootstrap_ci per metric (same resamples)."""
    from histomil.evaluation import bootstrap_ci, classification_metrics, multiclass_metrics
    from histomil.evaluation.metrics import binary_metrics

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 80)
    probs = rng.dirichlet(np.ones(3), 80)
    yb = (y == 1).astype(int)
    df = pd.DataFrame({"fold": np.repeat([0, 1], 40), "label": yb, "prob": probs[:, 1],
                       "split": "test"})  # fmt: skip
    rows = {r.name: r for r in metric_table(df, n_boot=50, thresholds={"0": 0.4, "1": 0.3})}
    for fold, thr in ((0, 0.4), (1, 0.3)):
        sel = slice(40 * fold, 40 * fold + 40)
        ref = classification_metrics(yb[sel], probs[sel, 1], thr)
        for name, row in rows.items():
            assert row.fold_values[str(fold)] == ref[name], name
    pred = np.r_[probs[:40, 1] >= 0.4, probs[40:, 1] >= 0.3].astype(int)
    ci = bootstrap_ci(lambda *a: binary_metrics(*a)["auprc"], yb, probs[:, 1], pred, n=50)
    assert (rows["auprc"].ci_low, rows["auprc"].ci_high) == (ci.low, ci.high)
    multi = pd.DataFrame(
        {"label": y, "split": "test", **{f"prob_{c}": probs[:, c] for c in range(3)}}
    )
    got = {r.name: r.estimate for r in metric_table(multi, n_boot=10)}
    ref = multiclass_metrics(y, probs)
    assert got == {k: ref[k] for k in ("auroc", "auprc", "accuracy", "f1")}
