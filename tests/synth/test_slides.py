from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point

from histomil.slides import open_slide
from histomil.synth.slides import (
    SlideSynthConfig,
    level_downsamples,
    parse_size,
    write_synthetic_slide,
)


@pytest.mark.parametrize(
    ("config", "levels_openslide", "levels_tiffslide"),
    [
        (SlideSynthConfig(size=(1500, 1100), min_level_side=400), 3, 3),
        (SlideSynthConfig(size=(1300, 700), layout="subifd", compression="deflate",
                     min_level_side=400, level_factor=4, mpp=0.25), 1, 2),
        (SlideSynthConfig(size=(700, 500), layout="flat", tile=128), 1, 1),
    ],
)  # fmt: skip
def test_layouts_readable_by_both_backends(
    tmp_path: Path, config, levels_openslide, levels_tiffslide
):
    made = write_synthetic_slide(tmp_path / "s.tif", config, seed=1, positive=False)
    assert made.annotation_xml is None
    expected = {"openslide": levels_openslide, "tiffslide": levels_tiffslide}
    regions = []
    for backend, n_levels in expected.items():
        with open_slide(made.path, backend=backend) as slide:
            assert slide.dimensions == config.size
            assert slide.mpp == pytest.approx(config.mpp)
            assert slide.level_count == n_levels
            regions.append(slide.read_region((200, 100), 0, (256, 200)))
    np.testing.assert_array_equal(regions[0], regions[1])
    assert len(level_downsamples(config)) == levels_tiffslide


def test_deterministic_per_seed(tmp_path: Path):
    cfg = SlideSynthConfig(size=(600, 450))
    a = write_synthetic_slide(tmp_path / "a.tif", cfg, seed=3, positive=True)
    b = write_synthetic_slide(tmp_path / "b.tif", cfg, seed=3, positive=True)
    c = write_synthetic_slide(tmp_path / "c.tif", cfg, seed=4, positive=True)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.path.read_bytes() != c.path.read_bytes()
    assert a.annotation_xml.read_text() == b.annotation_xml.read_text()


def test_cohort_manifest_and_annotations(synth_cohort: Path):
    df = pd.read_csv(synth_cohort, keep_default_na=False)
    assert list(df.columns) == ["slide_id", "label", "slide_path", "annotation_path"]
    assert df["label"].sum() == 2
    for row in df.itertuples():
        assert (synth_cohort.parent / row.slide_path).is_file()
        if row.label:
            xml = synth_cohort.parent / row.annotation_path
            root = ET.parse(xml).getroot()
            anns = root.findall("./Annotations/Annotation")
            assert anns and all(a.get("Type") == "Polygon" for a in anns)
            assert {a.get("PartOfGroup") for a in anns} <= {"Tumor", "_2"}
            assert "Tumor" in {a.get("PartOfGroup") for a in anns}
            coords = anns[0].findall("./Coordinates/Coordinate")
            assert [int(c.get("Order")) for c in coords] == list(range(len(coords)))
            geo = json.loads(xml.with_suffix(".geojson").read_text())
            names = [f["properties"]["classification"]["name"] for f in geo["features"]]
            assert names.count("Tumor") == len([a for a in anns if a.get("PartOfGroup") == "Tumor"])
            assert all(f["properties"]["objectType"] == "annotation" for f in geo["features"])
        else:
            assert row.annotation_path == ""


def _lesion_gap(tmp_path: Path, config: SlideSynthConfig) -> float:
    """Mean RGB of normal tissue minus mean RGB inside the first lesion (sampled every 8 px)."""
    made = write_synthetic_slide(tmp_path / "p.tif", config, 11, True)
    lesion = made.layout.lesions[0]
    with open_slide(made.path) as slide:
        img = slide.read_region((0, 0), 0, slide.dimensions).astype(float)
    ys, xs = np.mgrid[0 : img.shape[0] : 8, 0 : img.shape[1] : 8]
    inside = np.array(
        [lesion.contains(Point(x, y)) for x, y in zip(xs.ravel(), ys.ravel(), strict=True)]
    )
    tissue = np.array(
        [
            any(t.contains(Point(x, y)) for t in made.layout.tissue)
            for x, y in zip(xs.ravel(), ys.ravel(), strict=True)
        ]
    )
    pix = img[ys.ravel(), xs.ravel()]
    normal = tissue & ~inside
    assert inside.sum() > 20 and normal.sum() > 20
    return float(pix[normal].mean() - pix[inside].mean())


def test_lesions_look_different(tmp_path: Path):
    """Lesion pixels are darker and more purple than normal tissue of the same slide."""
    assert _lesion_gap(tmp_path, SlideSynthConfig(size=(1600, 1200))) > 20


def test_lesion_contrast_makes_lesions_less_distinct(tmp_path: Path):
    """The demo's harder cohort: at contrast 0.3 the lesion/normal colour gap shrinks to about
    a third; at 0 lesions look like normal tissue (only the noise differs)."""
    full = _lesion_gap(tmp_path, SlideSynthConfig(size=(1600, 1200)))
    low = _lesion_gap(tmp_path, SlideSynthConfig(size=(1600, 1200), lesion_contrast=0.3))
    none = _lesion_gap(tmp_path, SlideSynthConfig(size=(1600, 1200), lesion_contrast=0.0))
    assert 0.15 * full < low < 0.5 * full
    assert abs(none) < 3


def test_lesion_class_blends_normal_and_lesion():
    from histomil.synth.slide_render import LESION, NORMAL, lesion_class

    assert lesion_class(1.0) is LESION
    assert lesion_class(0.0).stroma == NORMAL.stroma
    half = lesion_class(0.5)
    assert half.coverage == pytest.approx((NORMAL.coverage + LESION.coverage) / 2)
    assert half.nucleus[0] == pytest.approx((NORMAL.nucleus[0] + LESION.nucleus[0]) / 2)


def test_lesion_scale_shrinks_lesions_only():
    from histomil.synth.slide_layout import make_layout

    def layout(scale: float):
        return make_layout(np.random.default_rng(4), (3000, 2250), True, True, scale)

    big, small = layout(1.0), layout(0.5)
    assert [t.wkt for t in big.tissue] == [t.wkt for t in small.tissue]
    assert len(small.lesions) == len(big.lesions) > 0
    ratio = sum(p.area for p in small.lesions) / sum(p.area for p in big.lesions)
    assert 0.15 < ratio < 0.35  # radii halved: about a quarter of the area


def test_parse_size_and_bad_config():
    assert parse_size("2000") == (2000, 1500)
    assert parse_size("40000x30000") == (40000, 30000)
    with pytest.raises(ValueError, match="layout"):
        SlideSynthConfig(layout="svs")
    with pytest.raises(ValueError, match="lesion_contrast"):
        SlideSynthConfig(lesion_contrast=1.5)
    with pytest.raises(ValueError, match="lesion_scale"):
        SlideSynthConfig(lesion_scale=0.0)
