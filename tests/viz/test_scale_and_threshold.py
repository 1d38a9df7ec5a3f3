"""Micrometre scale bars on heatmaps and montages; thresholded (zero) attention drawn apart."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from histomil.viz._scalebar import length_label, level0_mpp, nice_length_um
from histomil.viz.attention import load_attention
from histomil.viz.heatmap import (
    ZERO_RGB,
    HeatmapOptions,
    _attention_panel,
    build_canvas,
    draw_heatmap,
    montage_path_for,
    render_heatmap,
)
from histomil.viz.montage import PAD, montage_size

from .conftest import PS0, tissue_coords, write_attention, write_slide_png

SMALL = HeatmapOptions(thumbnail_size=384, panel_inches=3.0, dpi=60, top_k=4, montage_tile_px=64)


def _attention_file(tmp_path, *, mpp: float | None, zero_share: float = 0.0, slide=True):
    tmp_path.mkdir(parents=True, exist_ok=True)
    coords = tissue_coords()
    attrs = {"slide_id": "s", "label": 1, "split": "test", "patch_size_level0": PS0}
    if slide:
        attrs["slide_path"] = str(write_slide_png(tmp_path / "slide.png"))
    if mpp is not None:
        attrs["level0_mpp"] = mpp
    path = tmp_path / "attention" / "0" / "s.h5"
    write_attention(path, coords, attrs, positive=True, seed=0)
    if zero_share:
        with h5py.File(path, "a") as f:
            a = f["attention"][:]
            a[a < np.quantile(a, zero_share)] = 0
            f["attention"][...] = a / a.sum()
    return path


def test_nice_lengths_and_labels():
    assert nice_length_um(768.0) == 100.0  # a fifth of 768 um is 153.6 -> 100
    assert nice_length_um(1500.0) == 200.0
    assert nice_length_um(64.0, fraction=0.5) == 20.0
    assert nice_length_um(9.0) == 1.0
    assert length_label(500) == "500 \u00b5m" and length_label(2000) == "2 mm"
    with pytest.raises(ValueError):
        nice_length_um(0.0)


def _size_bars(fig):
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    return [a for ax in fig.axes for a in ax.artists if isinstance(a, AnchoredSizeBar)]


def test_every_panel_gets_a_micrometre_scale_bar(tmp_path):
    data = load_attention(_attention_file(tmp_path, mpp=0.5, slide=False))
    assert level0_mpp(data) == 0.5
    canvas = build_canvas(data, None, "", SMALL.thumbnail_size)
    fig = draw_heatmap(data, canvas, None, [], SMALL, mpp=0.5)
    bars = _size_bars(fig)
    assert len(bars) == 2  # attention + instance probability (blank canvas: no slide panel)
    width_um = canvas.image.shape[1] / canvas.sx * 0.5
    expected = nice_length_um(width_um)
    for bar in bars:
        assert bar.txt_label.get_text() == length_label(expected)
        (rect,) = bar.size_bar.get_children()
        assert rect.get_width() == pytest.approx(expected / (0.5 / canvas.sx))
    assert _size_bars(draw_heatmap(data, canvas, None, [], SMALL, mpp=None)) == []


def test_heatmap_without_resolution_says_there_is_no_scale_bar(tmp_path):
    data = load_attention(_attention_file(tmp_path, mpp=None, slide=False))
    assert level0_mpp(data) is None
    out = render_heatmap(data.source, tmp_path / "h.png", SMALL)
    assert out.is_file()


def test_montage_has_a_scale_bar_when_the_resolution_is_known(tmp_path):
    def top_right_dark(path):
        m = np.asarray(Image.open(montage_path_for(path)).convert("RGB")).astype(int)
        assert m.shape[1::-1] == montage_size(4, 64)
        w = m.shape[1]
        corner = m[PAD : PAD + 26, w - PAD - 40 : w - PAD]
        return int((corner.sum(-1) < 100).sum())

    with_mpp = render_heatmap(_attention_file(tmp_path / "a", mpp=0.5), tmp_path / "a.png", SMALL)
    without = render_heatmap(_attention_file(tmp_path / "b", mpp=None), tmp_path / "b.png", SMALL)
    assert top_right_dark(with_mpp) > 20
    assert top_right_dark(without) == 0


@pytest.mark.parametrize("scale", ["percentile", "raw"])
def test_thresholded_zero_weights_get_a_distinct_colour(tmp_path, scale):
    data = load_attention(_attention_file(tmp_path, mpp=0.5, zero_share=0.8, slide=False))
    zero = data.attention == 0
    panel = _attention_panel(data, scale)
    assert panel.n_zero == int(zero.sum()) > 0
    assert (panel.values[zero] < panel.vmin).all()
    # the kept patches span the whole colour scale instead of its top 20 %
    kept = panel.values[~zero]
    assert kept.min() == pytest.approx(panel.vmin) and kept.max() == pytest.approx(panel.vmax)
    options = HeatmapOptions(**{**SMALL.__dict__, "scale": scale})
    canvas = build_canvas(data, None, "", options.thumbnail_size)
    fig = draw_heatmap(data, canvas, None, [], options, mpp=0.5)
    image = fig.axes[0].get_images()[0].get_array()  # attention panel, opaque on a blank canvas
    from matplotlib import colormaps

    lowest = np.asarray(colormaps[options.cmap](0.0)[:3])
    for i in (np.flatnonzero(zero)[0], np.flatnonzero(~zero)[0]):
        x, y = (
            (data.coords[i] + PS0 / 2 - (canvas.ox, canvas.oy)) * (canvas.sx, canvas.sy)
        ).astype(int)
        colour = np.asarray(image[y, x][:3], dtype=float)
        if zero[i]:
            assert np.allclose(colour, ZERO_RGB, atol=1e-3)
            assert np.abs(colour - lowest).max() > 0.3  # not the bottom of the colour map
        else:
            assert not np.allclose(colour, ZERO_RGB, atol=0.05)
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert any("grey: weight 0" in text for text in labels), labels


def test_untresholded_attention_has_no_grey_class(tmp_path):
    data = load_attention(_attention_file(tmp_path, mpp=0.5, slide=False))
    panel = _attention_panel(data, "percentile")
    assert panel.n_zero == 0 and (panel.values >= panel.vmin).all()
    assert "grey" not in panel.label
