"""The batch label job and the `histomil label` command on a tiny patches dir written here."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from histomil.annotations.labelling import LabelConfig, label_patches_dir
from histomil.cli import app
from histomil.executors import BatchError

SIZE0 = 100  # level-0 px per patch
# these tests cover the deprecated in-place mode (test_label_reruns.py the output folder)
pytestmark = pytest.mark.filterwarnings("ignore:label without an output folder:DeprecationWarning")


def write_patch_file(path: Path, slide_id: str, n_side: int = 6, mpp: float = 0.25) -> np.ndarray:
    """A 6 x 6 patch grid of 100 px patches at (0..500, 0..500) with tissue fractions."""
    gx, gy = np.meshgrid(np.arange(n_side) * SIZE0, np.arange(n_side) * SIZE0)
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("coords", data=coords)
        f.create_dataset("tissue", data=np.full(len(coords), 0.5, dtype=np.float32))
        f.attrs.update(
            {"slide_id": slide_id, "slide_path": "", "patch_size": 224,
             "patch_size_level0": SIZE0, "level0_mpp": mpp, "target_mpp": 0.5}
        )  # fmt: skip
    return coords


def lesion_geojson(path: Path, box=(0, 0, 250, 200)) -> None:
    x0, y0, x1, y1 = box
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                        "properties": {"classification": {"name": "Tumor"}},
                    }
                ],
            }
        )
    )


@pytest.fixture()
def job_dir(tmp_path: Path) -> Path:
    """OUT/patches with pos (annotated), pos_noann, neg; OUT/annotations; OUT/bags/pos.h5."""
    out = tmp_path / "OUT"
    for sid in ("pos", "pos_noann", "neg"):
        write_patch_file(out / "patches" / f"{sid}.h5", sid)
    lesion_geojson(out / "annotations" / "pos.geojson")
    with h5py.File(out / "patches" / "pos.h5", "r") as f:
        coords = f["coords"][:]
    (out / "bags").mkdir()
    with h5py.File(out / "bags" / "pos.h5", "w") as f:
        f.create_dataset(
            "features", data=np.arange(len(coords) * 4, dtype=np.float32).reshape(-1, 4)
        )
        f.create_dataset("coords", data=coords)
        f.attrs["patch_size_level0"] = SIZE0
    pd.DataFrame({"slide_id": ["pos", "pos_noann", "neg"], "label": [1, 1, 0]}).to_csv(
        out / "manifest.csv", index=False
    )
    return out


def read(path: Path) -> tuple[dict, dict]:
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}, dict(f.attrs)


def test_label_dir_with_manifest_labels_bags_and_is_idempotent(job_dir: Path):
    patches = job_dir / "patches"
    table = label_patches_dir(patches, job_dir / "annotations", job_dir / "manifest.csv")
    assert table.set_index("slide_id")["status"].to_dict() == {
        "pos": "ok", "pos_noann": "ok", "neg": "ok"
    }  # fmt: skip
    data, attrs = read(patches / "pos.h5")
    # lesion [0, 250] x [0, 200]: patches (0|100, 0|100) full, (200, 0|100) half
    lesion = {(0, 0), (100, 0), (0, 100), (100, 100), (200, 0), (200, 100)}
    got = {
        tuple(c)
        for c, lab in zip(data["coords"].tolist(), data["patch_labels"], strict=True)
        if lab == 1
    }
    assert got == lesion
    assert data["patch_labels"].dtype == np.int8 and data["overlap"].dtype == np.float32
    assert data["attn_target"].sum() == pytest.approx(1.0)
    assert attrs["slide_label"] == 1 and bool(attrs["annotated"])
    assert attrs["label_min_overlap"] == 0.05 and attrs["annotation_path"].endswith("pos.geojson")
    noann, attrs = read(patches / "pos_noann.h5")
    assert np.all(noann["patch_labels"] == -1) and np.all(np.isnan(noann["overlap"]))
    assert not attrs["annotated"] and np.all(noann["attn_target"] == 0)
    neg, attrs = read(patches / "neg.h5")
    assert np.all(neg["patch_labels"] == 0) and attrs["slide_label"] == 0
    bag, _ = read(job_dir / "bags" / "pos.h5")
    np.testing.assert_array_equal(bag["patch_labels"], data["patch_labels"])
    np.testing.assert_array_equal(bag["features"].ravel(), np.arange(bag["features"].size))
    settings = json.loads((patches / "label_config.json").read_text())
    assert settings["min_overlap"] == 0.05 and settings["annotation"]["lesion_groups"][0] == "_0"
    status = pd.read_csv(patches / "label.csv")
    assert list(status.columns[:5]) == [
        "slide_id",
        "status",
        "n_patches",
        "n_lesion",
        "slide_label",
    ]
    assert status.set_index("slide_id").loc["pos", "n_lesion"] == 6
    # rerun with padding: datasets replaced, not duplicated; coords untouched
    label_patches_dir(
        patches,
        job_dir / "annotations",
        job_dir / "manifest.csv",
        LabelConfig(padding_px=100),
        overwrite=True,
    )
    again, attrs = read(patches / "pos.h5")
    assert attrs["label_padding_px"] == 100
    assert (again["patch_labels"] == 1).sum() > 6
    np.testing.assert_array_equal(again["coords"], data["coords"])
    assert sorted(again) == ["attn_target", "coords", "overlap", "patch_labels", "tissue"]
    assert not list(patches.glob(".*part"))


def test_without_labels_unannotated_slides_are_unknown_unless_told(job_dir: Path):
    patches = job_dir / "patches"
    table = label_patches_dir(patches, job_dir / "annotations").set_index("slide_id")
    assert table["slide_label"].to_dict() == {"pos": 1, "pos_noann": -1, "neg": -1}
    assert np.all(read(patches / "neg.h5")[0]["patch_labels"] == -1)
    cfg = LabelConfig(unannotated="negative")
    table = label_patches_dir(
        patches, job_dir / "annotations", config=cfg, overwrite=True
    ).set_index("slide_id")
    assert table["slide_label"].to_dict() == {"pos": 1, "pos_noann": 0, "neg": 0}
    assert np.all(read(patches / "neg.h5")[0]["patch_labels"] == 0)


def test_failures_are_isolated_and_reported(job_dir: Path):
    patches = job_dir / "patches"
    (job_dir / "annotations" / "pos_noann.xml").write_text("<ASAP_Annotations><oops")
    with pytest.raises(BatchError, match="1 of 3 slide"):
        label_patches_dir(patches, job_dir / "annotations", job_dir / "manifest.csv")
    table = label_patches_dir(
        patches, job_dir / "annotations", job_dir / "manifest.csv", skip_errors=True
    ).set_index("slide_id")
    assert table.loc["pos_noann", "status"] == "error"
    assert "pos_noann.xml: malformed XML" in table.loc["pos_noann", "error"]
    # finished slides are not relabelled by the rerun
    assert table.loc["pos", "status"] == "skipped" and table.loc["neg", "status"] == "skipped"
    # a negative slide with an annotation file is a contradiction, reported for that slide
    lesion_geojson(job_dir / "annotations" / "neg.geojson")
    table = label_patches_dir(
        patches, job_dir / "annotations", job_dir / "manifest.csv", skip_errors=True,
        overwrite=True,
    ).set_index("slide_id")  # fmt: skip
    assert "labelled negative but has annotation file" in table.loc["neg", "error"]


def test_manifest_as_annotations_and_missing_rows(job_dir: Path):
    patches = job_dir / "patches"
    manifest = job_dir / "with_paths.csv"
    pd.DataFrame(
        {"slide_id": ["pos", "neg"], "label": [1, 0],
         "annotation_path": ["annotations/pos.geojson", ""]}
    ).to_csv(manifest, index=False)  # fmt: skip
    table = label_patches_dir(patches, manifest, skip_errors=True).set_index("slide_id")
    assert table.loc["pos", "n_lesion"] == 6
    assert "not in manifest" in table.loc["pos_noann", "error"]


def test_cli_label_with_padding_um_and_qupath(job_dir: Path):
    patches = job_dir / "patches"
    args = ["label", "--patches", str(patches), "--annotations", str(job_dir / "annotations"),
            "--manifest", str(job_dir / "manifest.csv"), "--padding-um", "25", "--qupath"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "labelled 3/3 slide(s)" in result.output
    _, attrs = read(patches / "pos.h5")
    assert attrs["label_padding_px"] == pytest.approx(100.0)  # 25 um / 0.25 um/px
    collection = json.loads((patches / "labels_geojson" / "pos.geojson").read_text())
    detections = [f for f in collection["features"] if f["properties"]["objectType"] == "detection"]
    annotations = [
        f for f in collection["features"] if f["properties"]["objectType"] == "annotation"
    ]
    assert len(detections) == 36
    assert {a["properties"]["classification"]["name"] for a in annotations} == {
        "Tumor", "Padded lesion"
    }  # fmt: skip
    m = detections[0]["properties"]["measurements"]
    assert set(m) == {"patch_label", "overlap"} and m["patch_label"] == 1
    unknown = json.loads((patches / "labels_geojson" / "pos_noann.geojson").read_text())
    assert "overlap" not in unknown["features"][0]["properties"]["measurements"]
    bad = CliRunner().invoke(
        app,
        [
            "label",
            "--patches",
            str(patches),
            "--annotations",
            str(job_dir / "annotations"),
            "--padding-px",
            "1",
            "--padding-um",
            "1",
        ],  # fmt: skip
    )
    assert bad.exit_code != 0 and "not both" in bad.output


def test_annotation_outside_the_real_slide_is_reported(tmp_path: Path, real_slide: Path):
    patches = tmp_path / "patches"
    write_patch_file(patches / "cmu.h5", "cmu")
    with h5py.File(patches / "cmu.h5", "a") as f:
        f.attrs["slide_path"] = str(real_slide)  # 2220 x 2967 level-0 px
    lesion_geojson(tmp_path / "ann" / "cmu.geojson", (50_000, 50_000, 51_000, 51_000))
    table = label_patches_dir(patches, tmp_path / "ann", skip_errors=True).set_index("slide_id")
    assert table.loc["cmu", "status"] == "error"
    assert "cmu.geojson: coordinates outside the slide" in table.loc["cmu", "error"]
    assert "2220 x 2967" in table.loc["cmu", "error"]
    lesion_geojson(tmp_path / "ann" / "cmu.geojson", (0, 0, 250, 200))
    table = label_patches_dir(patches, tmp_path / "ann").set_index("slide_id")
    assert table.loc["cmu", "n_lesion"] == 6


def test_qupath_features_have_the_fields_qupath_reads_and_one_colour_per_class():
    import numpy as np
    import shapely

    from histomil.annotations.qupath import CLASS_COLORS, labelled_patches_geojson
    from histomil.annotations.readers import Annotations

    lesion = shapely.box(0, 0, 150, 100)
    ann = Annotations(lesion=lesion, exclusion=shapely.box(300, 0, 400, 100))
    coords = np.array([[0, 0], [100, 0], [200, 0]])
    fc = labelled_patches_geojson(
        coords, 100, np.array([1, 0, -1]), np.array([1.0, 0.5, np.nan]), ann
    )
    assert fc["type"] == "FeatureCollection"
    for f in fc["features"]:
        props = f["properties"]
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        assert props["objectType"] in ("detection", "annotation")
        name = props["classification"]["name"]
        assert props["classification"]["color"] == CLASS_COLORS[name]
        assert isinstance(props["measurements"], dict)
    tumor = next(f for f in fc["features"] if f["properties"]["classification"]["name"] == "Tumor")
    assert tumor["properties"]["measurements"] == {"area_px": 15000.0}
    det = [f["properties"]["measurements"] for f in fc["features"][2:]]
    assert det == [{"patch_label": 1.0, "overlap": 1.0}, {"patch_label": 0.0, "overlap": 0.5},
                   {"patch_label": -1.0}]  # fmt: skip
