"""Paths stored in outputs never depend on the working directory (issue 19).

Before: `histomil label --annotations ann/` stored the relative `ann/<id>.geojson` in the patch
and bag files, so `heatmap` run from another folder could not find it and silently drew the
outline of lesion-labelled patches instead of the user's polygon.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

import histomil


def _attrs(path: Path) -> dict:
    with h5py.File(path) as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def _make(tmp_path: Path) -> Path:
    from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides

    work = tmp_path / "work"
    make_synthetic_slides(
        work / "s", 1, seed=5, config=SlideSynthConfig(size=(800, 600)), positive_fraction=1.0
    )
    return work


def test_label_stores_an_absolute_annotation_path(tmp_path, monkeypatch):
    """Library level: a relative annotations folder is stored as an absolute path."""
    from histomil.annotations.labelling import LabelConfig, label_patches_dir
    from histomil.slides.preprocess import PreprocessConfig, preprocess_slides

    work = _make(tmp_path)
    monkeypatch.chdir(work)
    preprocess_slides([Path("s/manifest.csv")], Path("p"), PreprocessConfig(patch_size=64))
    label_patches_dir(Path("p/patches"), Path("s/slides"), config=LabelConfig())
    monkeypatch.chdir(tmp_path)
    attrs = _attrs(next((work / "p" / "patches").glob("*.h5")))
    assert Path(attrs["annotation_path"]).is_absolute()
    assert Path(attrs["annotation_path"]).is_file()
    assert Path(attrs["slide_path"]).is_absolute()


def test_heatmap_from_another_folder_draws_the_users_polygon(tmp_path, monkeypatch):
    """API level, relative paths everywhere, heatmap run from elsewhere."""
    from histomil.viz._sources import lesion_geometry
    from histomil.viz.attention import load_attention

    work = _make(tmp_path)
    monkeypatch.chdir(work)
    pre = histomil.preprocess("s/manifest.csv", "p", patch_size=64)
    histomil.label("p/patches", "s/slides", "labels")
    ext = histomil.extract("labels", "p", encoder="timm:resnet18", random_weights=True,
                           readers=0, batch_size=32)  # fmt: skip
    bag = next(ext.bags_dir.glob("*.h5"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    attrs = _attrs(bag)
    for key in ("annotation_path", "slide_path", "patch_file"):
        assert Path(attrs[key]).is_absolute() and Path(attrs[key]).is_file(), key
    att = elsewhere / "att.npy"
    np.save(att, np.random.default_rng(0).random(pre.n_patches))
    _, note = lesion_geometry(load_attention(bag, None, None, att, None))
    assert note.startswith("lesion outline: annotation"), note
    result = histomil.heatmap(bag, "maps", attention="att.npy", top_k=0)
    assert result.png.is_file() and result.png.parent == elsewhere / "maps"
    # a bag is an input: without --out the heatmap is refused, not written beside it
    from typer.testing import CliRunner

    from histomil.cli import app

    res = CliRunner().invoke(app, ["heatmap", str(bag), "--attention", "att.npy"])
    assert res.exit_code == 1 and "--out DIR" in res.output
    assert not (bag.parent / "heatmaps").exists()
