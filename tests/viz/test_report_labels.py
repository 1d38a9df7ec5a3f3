"""The report does not mislead: one kind of estimate per table, run links, captions, curves."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histomil.viz._figures import figure_caption, history_figure, set_png_caption
from histomil.viz.report import ReportOptions, build_report, find_runs

FAST = ReportOptions(n_boot=100, heatmaps=False)


class _Tables(HTMLParser):
    """Header cells of every table, by the id of the section holding it."""

    def __init__(self) -> None:
        super().__init__()
        self.section, self.tables, self._th = None, [], False

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.section = dict(attrs).get("id")
        elif tag == "table":
            self.tables.append((self.section, []))
        elif tag == "th":
            self._th = True
            self.tables[-1][1].append("")

    def handle_endtag(self, tag):
        if tag == "th":
            self._th = False

    def handle_data(self, data):
        if self._th:
            self.tables[-1][1][-1] += data


def _tables(html: str, section: str) -> list[list[str]]:
    parser = _Tables()
    parser.feed(html)
    return [heads for sec, heads in parser.tables if sec == section]


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("out", "report.html", "heatmaps"))
    df = pd.read_csv(dst / "predictions.csv")
    for fold, rows in df.groupby("fold"):  # the trainer also writes per-fold predictions
        rows.to_csv(dst / "folds" / str(fold) / "predictions.csv", index=False)
    return dst


def test_run_metrics_tables_hold_one_kind_of_estimate_each(run_dir, tmp_path):
    html = build_report(_copy_run(run_dir, tmp_path / "run"), None, FAST).read_text()
    pooled, per_fold = _tables(html, "metrics")
    assert any("pooled" in h for h in pooled) and not any("fold" in h for h in pooled)
    assert "mean \u00b1 sd over folds" in per_fold and {"fold 0", "fold 1"} <= set(per_fold)
    assert not any("pooled" in h for h in per_fold)
    assert "<h3>Pooled over folds</h3>" in html and "<h3>Per fold</h3>" in html
    assert "auroc (pooled test)" in html  # the summary card says which AUROC it is


def test_experiment_lists_runs_not_their_folds_and_links_their_reports(run_dir, tmp_path):
    exp = tmp_path / "exp"
    for name in ("a", "b"):
        _copy_run(run_dir, exp / "runs" / name)
    build_report(exp / "runs" / "a", None, FAST)  # b has no report yet
    (exp / "table.md").write_text("| method | AUROC |\n|---|---|\n| a | 0.8 |\n")
    assert [p.name for p in find_runs(exp, 40)] == ["a", "b"]  # not runs/a/folds/0 ...
    out = tmp_path / "elsewhere" / "top.html"
    html = build_report(exp, out, FAST).read_text()
    assert "folds/0" not in html
    (runs,) = _tables(html, "runs")
    assert runs == ["run", "run report", "metric", "pooled test estimate", "95% bootstrap CI"]
    hrefs = [h for h in re.findall(r'href="([^"#][^"]*)"', html)]
    assert set(hrefs) == {"../exp/runs/a/report.html"}
    assert all((out.parent / h).resolve().is_file() for h in hrefs)
    assert "no report yet" in html
    assert "different estimate from a mean" in html


def test_figure_captions_say_what_the_figure_shows(tmp_path):
    png = tmp_path / "heatmap_synth_0_001_abmil.png"
    Image.new("RGB", (20, 10), "red").save(png)
    assert figure_caption(png) == "Attention heatmap synth_0_001_abmil"
    set_png_caption(png, "Attention of slide X: thumbnail, then attention per patch.")
    assert figure_caption(png) == "Attention of slide X: thumbnail, then attention per patch."
    assert np.asarray(Image.open(png)).shape == (10, 20, 3)  # pixels kept
    other = tmp_path / "low_data_auroc.png"
    Image.new("RGB", (20, 10), "red").save(other)
    assert ".png" not in figure_caption(other)


def test_heatmap_png_carries_its_caption(run_dir, tmp_path):
    from histomil.viz.heatmap import HeatmapOptions, render_heatmap

    options = HeatmapOptions(thumbnail_size=256, panel_inches=2.5, dpi=50, top_k=2)
    out = render_heatmap(run_dir, tmp_path / "h.png", options, slide_id="slide_pos0", fold=0)
    caption = figure_caption(out)
    assert caption.startswith("Attention heatmap of slide slide_pos0")
    assert "instance probability" in caption and ".png" not in caption
    assert "Black outline: lesion-labelled patches." in caption


def test_training_curves_put_each_term_on_its_own_axis(tmp_path):
    for fold in (0, 1):
        epochs = np.arange(6)
        hist = pd.DataFrame({
            "epoch": epochs, "train_bag": 0.7 - 0.05 * epochs, "train_rank": 5.0 - 0.5 * epochs,
            "train_con": 0.01 * epochs, "train_total": 5.7 - 0.5 * epochs,
            "val_loss": [0.7, 0.6, 0.55, 0.5, 0.52, 0.56], "val_auroc": 0.5 + 0.05 * epochs,
        })  # fmt: skip
        path = tmp_path / "folds" / str(fold) / "history.csv"
        path.parent.mkdir(parents=True)
        hist.to_csv(path, index=False)
    fig = history_figure(sorted(tmp_path.glob("folds/*/history.csv")))
    bag, rank, con, auroc = fig.axes[:4]
    assert "train vs validation" in bag.get_title()
    labels = [line.get_label() for line in bag.get_lines()]
    assert "fold 0 train" in labels and "fold 0 validation" in labels
    ys = {line.get_label(): line.get_ydata() for line in bag.get_lines()}
    np.testing.assert_allclose(ys["fold 0 train"], 0.7 - 0.05 * np.arange(6))  # bag term, not total
    assert max(max(line.get_ydata()) for line in bag.get_lines()) < 1.0  # rank (5.0) elsewhere
    assert "Rank" in rank.get_title() and max(rank.get_lines()[0].get_ydata()) == pytest.approx(5)
    assert "Consistency" in con.get_title() and "AUROC" in auroc.get_title()
    stars = [line for line in bag.get_lines() if line.get_marker() == "*"]
    assert [float(s.get_xdata()[0]) for s in stars] == [3.0, 3.0]  # best epoch: lowest val loss


def test_templates_escape_text_and_keep_raw_html():
    from histomil.viz import _html as H

    html = H.table(["a<b"], [["<script>x</script>", H.RawHtml("<b>ok</b>")], [1.5, 2]])
    assert "<th>a&lt;b</th>" in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<td><b>ok</b></td>" in html and '<td class="num">1.500</td>' in html
    page = H.page("t<1>", "<i>meta</i>", [("s", "S & T", "<p>body</p>")], "f<")
    assert "<title>t&lt;1&gt;</title>" in page and "<i>meta</i>" in page
    assert '<a href="#s">S &amp; T</a>' in page and "<p>body</p>" in page and "f&lt;" in page
    assert H.figure(b"png", 'say "hi"').count("&#34;hi&#34;") == 2  # alt and caption
