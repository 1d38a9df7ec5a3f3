"""Heatmaps and montages from stored coords + attention (slide PNG, blank canvas, CLAM bag)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from histomil.viz.attention import AttentionData, VizError, load_attention, percentile_rank
from histomil.viz.heatmap import HeatmapOptions, figure_size_px, montage_path_for, render_heatmap
from histomil.viz.montage import HEADER_PX, PAD, montage_size

from .conftest import PS0, SLIDE_H, SLIDE_W, tissue_coords

SMALL = HeatmapOptions(thumbnail_size=384, panel_inches=3.0, dpi=60, top_k=4, montage_tile_px=64)


def _blank_aspect() -> float:
    """Aspect of the blank canvas: level-0 extent of the patches, rounded to canvas pixels."""
    xy = tissue_coords()
    lo = np.maximum(xy.min(0) - PS0, 0)
    w0, h0 = xy[:, 0].max() + 2 * PS0 - lo[0], xy[:, 1].max() + 2 * PS0 - lo[1]
    s = SMALL.thumbnail_size / max(w0, h0)
    return round(h0 * s) / round(w0 * s)


def test_heatmap_on_slide_png_and_montage(run_dir, tmp_path):
    out = render_heatmap(run_dir, tmp_path / "h.png", SMALL, slide_id="slide_pos0", fold=0)
    with Image.open(out) as img:
        img.load()
        # slide panel + attention + instance probability (fold 0 stores instance_prob)
        assert img.size == figure_size_px(3, SLIDE_H / SLIDE_W, SMALL)
    montage = montage_path_for(out)
    with Image.open(montage) as m:
        m = np.asarray(m.convert("RGB"))
    assert m.shape[1::-1] == montage_size(4, 64)
    # top-attention patches are the lesion (dark purple in the synthetic slide), bottom ones are not
    top = m[PAD + HEADER_PX + 10 : PAD + HEADER_PX + 54, PAD + 10 : PAD + 54].reshape(-1, 3).mean(0)
    y_bottom = PAD + 2 * HEADER_PX + 64 + 20 + 10
    bottom = m[y_bottom : y_bottom + 44, PAD + 10 : PAD + 54].reshape(-1, 3).mean(0)
    assert np.allclose(top, (120, 40, 140), atol=25), top
    assert not np.allclose(bottom, (120, 40, 140), atol=25), bottom


def test_missing_slide_draws_blank_canvas_without_montage(run_dir, tmp_path):
    out = render_heatmap(run_dir, tmp_path / "b.png", SMALL, slide_id="slide_pos2", fold=0)
    with Image.open(out) as img:
        assert img.size == figure_size_px(2, _blank_aspect(), SMALL)
    assert not montage_path_for(out).exists()


def test_raw_and_percentile_scaling_differ(run_dir, tmp_path):
    a = render_heatmap(run_dir, tmp_path / "p.png", SMALL, slide_id="slide_pos6", fold=1)
    raw = HeatmapOptions(**{**SMALL.__dict__, "scale": "raw"})
    b = render_heatmap(run_dir, tmp_path / "r.png", raw, slide_id="slide_pos6", fold=1)
    pa, pb = np.asarray(Image.open(a).convert("RGB")), np.asarray(Image.open(b).convert("RGB"))
    assert pa.shape == pb.shape  # fold 1 has no instance_prob: one panel each
    assert pa.shape[1] == round(SMALL.panel_inches * SMALL.dpi)
    assert (pa != pb).any()


def test_default_fold_is_the_test_fold_and_default_path(run_dir):
    data = load_attention(run_dir, "slide_neg7")  # only fold 1 has it, as a test slide
    assert data.fold == "1" and data.attrs["split"] == "test"
    out = render_heatmap(run_dir, None, SMALL, slide_id="slide_neg7")
    assert out == run_dir / "heatmaps" / "slide_neg7_fold1.png" and out.is_file()


def _clam_bag(tmp_path, n_attention: int | None = None):
    xy = tissue_coords()
    bag = tmp_path / "h5_files" / "clam_slide.h5"
    bag.parent.mkdir(parents=True)
    with h5py.File(bag, "w") as f:
        f["features"] = np.zeros((1, len(xy), 8), np.float32)  # CLAM keeps a batch axis sometimes
        f["coords"] = xy[None]
        f["coords"].attrs["patch_size"] = PS0
        f["coords"].attrs["patch_level"] = 0
    att = tmp_path / "att.npy"
    np.save(att, np.linspace(0, 1, n_attention or len(xy)))
    return bag, att


def test_clam_bag_with_npy_attention(tmp_path):
    bag, att = _clam_bag(tmp_path)
    opts = HeatmapOptions(**{**SMALL.__dict__, "attention_path": att})
    out = render_heatmap(bag, tmp_path / "c.png", opts)
    data = load_attention(bag, attention_path=att)
    assert data.slide_id == "clam_slide" and data.patch_size_level0 == PS0
    with Image.open(out) as img:
        assert img.size == figure_size_px(1, _blank_aspect(), SMALL)


def test_clear_errors(run_dir, tmp_path):
    bag, att = _clam_bag(tmp_path, n_attention=5)
    with pytest.raises(VizError, match="5 values but there are"):
        load_attention(bag, attention_path=att)
    with pytest.raises(VizError, match="--attention"):
        load_attention(bag)
    with pytest.raises(VizError, match="slide id"):
        load_attention(run_dir)
    with pytest.raises(VizError, match="folds: 0"):
        load_attention(run_dir, "slide_pos0", fold=1)
    with pytest.raises(VizError, match="unknown scale"):
        HeatmapOptions(scale="log")


def test_percentile_rank_ties_and_range():
    p = percentile_rank(np.array([0.1, 0.5, 0.5, 0.9, 0.0, 0.0]))
    assert p[4] == p[5] == 0 and p[3] == 100  # tied zeros stay at the bottom
    assert p[1] == p[2] == pytest.approx(100 * 3 / 5) and p[0] == pytest.approx(40)


def test_lesion_outline_from_annotation_file(run_dir, tmp_path):
    pytest.importorskip("histomil.annotations")
    import json

    from histomil.viz._sources import lesion_geometry

    ann = tmp_path / "ann.geojson"
    ring = [[700, 400], [900, 400], [900, 700], [700, 700], [700, 400]]
    ann.write_text(json.dumps({"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
                               "geometry": {"type": "Polygon", "coordinates": [ring]}}))  # fmt: skip
    data = load_attention(run_dir, "slide_pos0", fold=0)
    geom, note = lesion_geometry(data, ann)
    assert "annotation ann.geojson" in note and geom.bounds == (700, 400, 900, 700)
    geom, note = lesion_geometry(data, tmp_path / "absent.xml")
    assert "patches" in note and geom.bounds == (640, 384, 1024, 768)  # fallback: patch labels
    opts = HeatmapOptions(**{**SMALL.__dict__, "annotation_path": ann, "top_k": 0})
    out = render_heatmap(run_dir, tmp_path / "a.png", opts, slide_id="slide_pos0", fold=0)
    assert not montage_path_for(out).exists()  # top_k = 0: no montage


def test_vectorised_painting_matches_per_patch_loop():
    from histomil.viz.attention import AttentionData
    from histomil.viz.heatmap import build_canvas, paint_values

    xs, ys = np.meshgrid(np.arange(0, 60000, 256), np.arange(0, 40000, 256))
    xy = np.stack([xs.ravel(), ys.ravel()], 1)
    rng = np.random.default_rng(0)
    data = AttentionData("big", xy, rng.random(len(xy)), 256)
    canvas = build_canvas(data, None, "", 700)  # ~3 px per patch: the vectorised path
    rgb = rng.random((len(xy), 3))
    got = paint_values(canvas, data, rgb)
    ref = np.zeros_like(got)
    x, y = xy[:, 0] - canvas.ox, xy[:, 1] - canvas.oy
    for i in range(len(xy)):
        r0, c0 = round(y[i] * canvas.sy), round(x[i] * canvas.sx)
        r1 = max(r0 + 1, round((y[i] + 256) * canvas.sy))
        c1 = max(c0 + 1, round((x[i] + 256) * canvas.sx))
        ref[r0:r1, c0:c1, :3], ref[r0:r1, c0:c1, 3] = rgb[i], 1
    assert np.array_equal(got, ref)
    assert got[:, :, 3].mean() > 0.5  # the grid is covered without gaps inside the margin


def test_title_names_the_method_not_only_the_model():
    """Heatmaps of AB-MIL and of rank induction (AB-MIL + rank loss) must be told apart."""
    from histomil.viz.heatmap import _title

    def title(**attrs):
        data = AttentionData(
            slide_id="s1",
            coords=np.zeros((1, 2), dtype=np.int64),
            attention=np.ones(1),
            patch_size_level0=448,
            attrs={"split": "test", "label": 1, "prob": 0.9, **attrs},
            fold="0",
        )
        return _title(data)

    assert "abmil + rank_induction" in title(model="abmil", objective="rank_induction")
    plain = title(model="abmil", objective="bag")
    assert "abmil" in plain and "bag" not in plain
    assert title(model="abmil").startswith("s1  ·  fold 0  ·  abmil")
