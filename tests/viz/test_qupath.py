"""QuPath GeoJSON: detections with measurements per patch, tissue and lesion annotations."""

from __future__ import annotations

import json

import h5py
import pytest

from histomil.viz.qupath import QuPathOptions, export_qupath

from .conftest import LESION, PS0


def _n_patches(run_dir, sid: str, fold: int) -> int:
    with h5py.File(run_dir / "attention" / str(fold) / f"{sid}.h5", "r") as f:
        return f["coords"].shape[0]


def test_export_detections_and_annotations(run_dir, tmp_path):
    tissue = run_dir / "tissue" / "slide_pos0.geojson"  # OUT/tissue next to OUT/bags
    tissue.parent.mkdir(exist_ok=True)
    ring = [[100, 100], [1400, 100], [1400, 950], [100, 950], [100, 100]]
    tissue.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {}}
    ]}))  # fmt: skip
    out = export_qupath(run_dir, tmp_path / "s.geojson", slide_id="slide_pos0", fold=0)
    obj = json.loads(out.read_text())
    assert obj["type"] == "FeatureCollection"
    feats = obj["features"]
    det = [f for f in feats if f["properties"]["objectType"] == "detection"]
    ann = [f for f in feats if f["properties"]["objectType"] == "annotation"]
    assert len(det) == _n_patches(run_dir, "slide_pos0", 0)
    assert len(feats) == len(det) + 2  # one tissue polygon + one lesion polygon
    assert {a["properties"]["classification"]["name"] for a in ann} == {"Tissue", "Tumor"}
    lesion = next(a for a in ann if a["properties"]["classification"]["name"] == "Tumor")
    xs = [p[0] for p in lesion["geometry"]["coordinates"][0]]
    assert (min(xs), max(xs)) == (LESION[0], LESION[2])
    d = det[0]
    assert d["geometry"]["type"] == "Polygon"
    ring = d["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5
    assert ring[2][0] - ring[0][0] == PS0
    m = d["properties"]["measurements"]
    assert isinstance(m, dict)
    assert {"attention", "attention_percentile", "instance_prob", "slide_prob"} <= set(m)
    assert all(isinstance(v, float) for v in m.values())
    assert len({f["id"] for f in feats}) == len(feats)


def test_legacy_measurement_list_and_no_extras(run_dir, tmp_path):
    opts = QuPathOptions(include_tissue=False, include_lesion=False, legacy_measurements=True)
    out = export_qupath(run_dir, tmp_path / "l.geojson", opts, slide_id="slide_neg1", fold=0)
    feats = json.loads(out.read_text())["features"]
    assert len(feats) == _n_patches(run_dir, "slide_neg1", 0)
    m = feats[0]["properties"]["measurements"]
    assert isinstance(m, list) and {"name", "value"} <= set(m[0])


def test_annotation_file_gives_lesion_and_exclusion(run_dir, tmp_path):
    pytest.importorskip("histomil.annotations")
    x0, y0, x1, y1 = LESION

    def poly(a, b, c, d):
        return {"type": "Polygon", "coordinates": [[[a, b], [c, b], [c, d], [a, d], [a, b]]]}

    ann = tmp_path / "ann.geojson"
    ann.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": poly(x0 + 10, y0 + 10, x1 - 10, y1 - 10),
         "properties": {"classification": {"name": "Tumor"}}},
        {"type": "Feature", "geometry": poly(100, 100, 200, 200),
         "properties": {"classification": {"name": "Exclusion"}}},
    ]}))  # fmt: skip
    opts = QuPathOptions(include_tissue=False, annotation_path=ann)
    out = export_qupath(run_dir, tmp_path / "a.geojson", opts, slide_id="slide_pos0", fold=0)
    ann_feats = [f for f in json.loads(out.read_text())["features"]
                 if f["properties"]["objectType"] == "annotation"]  # fmt: skip
    names = sorted(f["properties"]["name"] for f in ann_feats)
    assert names == ["Exclusion 1", "Tumor 1"]  # from the file, not from the patch labels
    tumor = next(f for f in ann_feats if f["properties"]["name"] == "Tumor 1")
    assert min(p[0] for p in tumor["geometry"]["coordinates"][0]) == x0 + 10


def test_export_uses_the_annotation_builders_colours_and_field_names(run_dir, tmp_path):
    from histomil.annotations.qupath import CLASS_COLORS

    out = export_qupath(run_dir, tmp_path / "c.geojson", slide_id="slide_pos0", fold=0)
    feats = json.loads(out.read_text())["features"]
    classified = [
        f["properties"]["classification"] for f in feats if "classification" in f["properties"]
    ]
    assert classified and all(c["color"] == CLASS_COLORS[c["name"]] for c in classified)
    det = next(f for f in feats if f["properties"]["objectType"] == "detection")
    assert "patch_label" in det["properties"]["measurements"]
    assert "label" not in det["properties"]["measurements"]
