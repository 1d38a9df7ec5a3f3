"""Synthetic slide -> preprocess -> label: lesion patches are found where the synthetic lesion is."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import shapely

from histomil.annotations import read_annotations
from histomil.annotations.labelling import label_patches_dir

synth = pytest.importorskip("histomil.synth.slides", reason="needs histomil.synth.slides")
preprocess = pytest.importorskip("histomil.slides.preprocess", reason="needs preprocessing")


def test_synthetic_slides_preprocess_then_label(tmp_path):
    config = synth.SlideSynthConfig(size=(2000, 1500), mpp=0.5, artefacts=False)
    manifest = synth.make_synthetic_slides(tmp_path / "synth", n=2, seed=3, config=config)
    out = tmp_path / "OUT"
    preprocess.preprocess_slides([manifest], out)
    table = label_patches_dir(out / "patches", manifest, out_dir=out / "labels")
    table = table.set_index("slide_id")
    assert (table["status"] == "ok").all(), table["error"].tolist()
    rows = pd.read_csv(manifest, dtype={"slide_id": str}).set_index("slide_id")
    pos = rows.index[rows["label"] == 1][0]
    neg = rows.index[rows["label"] == 0][0]

    with h5py.File(out / "labels" / f"{neg}.h5", "r") as f:
        assert np.all(f["patch_labels"][:] == 0)
    with h5py.File(out / "labels" / f"{pos}.h5", "r") as f:
        coords, labels = f["coords"][:], f["patch_labels"][:]
        overlap, target = f["overlap"][:], f["attn_target"][:]
        size0 = int(f.attrs["patch_size_level0"])
        assert bool(f.attrs["annotated"]) and f.attrs["slide_label"] == 1
    assert table.loc[pos, "n_lesion"] == (labels == 1).sum() > 0
    assert (labels == 0).sum() > 0  # and non-lesion tissue around it
    # the synthetic generator's own GeoJSON (not the XML used for labelling) is the truth
    truth = read_annotations(tmp_path / "synth" / "slides" / f"{pos}.geojson").region()
    boxes = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + size0, coords[:, 1] + size0)
    covered = shapely.area(shapely.intersection(boxes, truth)) / size0**2
    np.testing.assert_allclose(overlap, covered, atol=1e-5)
    assert np.all(covered[labels == 1] > 0.05)
    centres = shapely.points(coords + size0 / 2)
    assert np.all(labels[shapely.contains(truth, centres)] == 1)
    assert target.sum() == pytest.approx(1.0, abs=1e-5) and np.all(target[labels == 0] < 0.05)
