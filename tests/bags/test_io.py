"""Bag file round trip, CLAM/TRIDENT readers and clear errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from histomil.bags import BagError, detect_layout, load_bag, write_bag


def _arrays(n: int = 7, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d)).astype(np.float32)
    coords = rng.integers(0, 10_000, size=(n, 2)).astype(np.int64)
    return features, coords


def test_round_trip_with_labels_and_attrs(tmp_path):
    features, coords = _arrays()
    labels = np.array([1, 0, -1, 0, 1, 0, 0], dtype=np.int8)
    overlap = np.linspace(0, 1, 7, dtype=np.float32)
    path = write_bag(
        tmp_path / "bags" / "s1.h5",
        features,
        coords,
        patch_labels=labels,
        overlap=overlap,
        attrs={"encoder": "resnet50_trunc", "patch_size": 224, "slide_label": None},
    )
    bag = load_bag(path)
    assert bag.layout == "histomil"
    np.testing.assert_array_equal(bag.features, features)
    np.testing.assert_array_equal(bag.coords, coords)
    np.testing.assert_array_equal(bag.patch_labels, labels)
    np.testing.assert_array_equal(bag.overlap, overlap)
    assert bag.tissue is None and bag.attn_target is None
    assert bag.attrs["encoder"] == "resnet50_trunc"
    assert bag.attrs["feature_dim"] == 5 and "slide_label" not in bag.attrs
    assert bag.features.dtype == np.float32 and bag.patch_labels.dtype == np.int8
    assert not list((tmp_path / "bags").glob(".*"))  # no temporary leftovers


def test_float16_storage_reads_back_as_float32(tmp_path):
    features, coords = _arrays()
    path = write_bag(tmp_path / "s.h5", features, coords, dtype="float16")
    with h5py.File(path) as f:
        assert f["features"].dtype == np.float16
        assert f.attrs["feature_dtype"] == "float16"
    bag = load_bag(path)
    assert bag.features.dtype == np.float32
    np.testing.assert_allclose(bag.features, features, atol=1e-2)


@pytest.mark.parametrize(
    ("features", "coords", "labels", "message"),
    [
        (np.full((3, 4), np.nan, np.float32), np.zeros((3, 2)), None, "NaN or Inf"),
        (np.zeros((3, 4), np.float32), np.zeros((2, 2)), None, "coords shape"),
        (np.zeros((3, 4), np.float32), np.zeros((3, 2)), np.zeros(4, np.int8), "patch_labels"),
        (np.zeros((0, 4), np.float32), np.zeros((0, 2)), None, "empty bag"),
        (np.zeros((3,), np.float32), np.zeros((3, 2)), None, "2-D"),
    ],
)
def test_write_rejects_bad_bags_naming_the_file(tmp_path, features, coords, labels, message):
    path = tmp_path / "bad.h5"
    with pytest.raises(BagError, match=message) as info:
        write_bag(path, features, coords, patch_labels=labels)
    assert "bad.h5" in str(info.value)
    assert not path.exists()


def test_load_rejects_nan_and_mismatch_written_by_others(tmp_path):
    path = tmp_path / "h5_files" / "x.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f["features"] = np.array([[0.0, np.inf], [1.0, 2.0]], np.float32)
        f["coords"] = np.zeros((2, 2), np.int64)
    with pytest.raises(BagError, match=r"x\.h5.*1 of 2 feature rows"):
        load_bag(path)
    with h5py.File(path, "w") as f:
        f["features"] = np.zeros((2, 3), np.float32)
        f["coords"] = np.zeros((5, 2), np.int64)
    with pytest.raises(BagError, match="coords shape"):
        load_bag(path)
    with h5py.File(path, "w") as f:
        f["coords"] = np.zeros((5, 2), np.int64)
    with pytest.raises(BagError, match="no 'features'"):
        load_bag(path)
    with pytest.raises(BagError, match="does not exist"):
        load_bag(tmp_path / "nope.h5")


def test_clam_h5_and_pt_layouts(tmp_path):
    features, coords = _arrays(n=9, d=6)
    (tmp_path / "h5_files").mkdir()
    (tmp_path / "pt_files").mkdir()
    with h5py.File(tmp_path / "h5_files" / "tumor_001.h5", "w") as f:
        f["features"] = features
        d = f.create_dataset("coords", data=coords)
        d.attrs["patch_size"] = 256
        d.attrs["patch_level"] = 0
    torch.save(torch.from_numpy(features), tmp_path / "pt_files" / "tumor_001.pt")
    torch.save(torch.from_numpy(features), tmp_path / "pt_files" / "lonely.pt")

    h5 = load_bag(tmp_path / "h5_files" / "tumor_001.h5")
    assert h5.layout == "clam_h5"
    np.testing.assert_array_equal(h5.coords, coords)
    assert h5.attrs["patch_size"] == 256

    pt = load_bag(tmp_path / "pt_files" / "tumor_001.pt")
    assert pt.layout == "clam_pt"
    np.testing.assert_array_equal(pt.features, features)
    np.testing.assert_array_equal(pt.coords, coords)  # from the sibling h5_files file

    lonely = load_bag(tmp_path / "pt_files" / "lonely.pt")
    assert lonely.coords is None and lonely.features.shape == (9, 6)


def test_trident_layout_with_batch_axis_and_coords_attrs(tmp_path):
    features, coords = _arrays(n=4, d=8)
    folder = tmp_path / "20x_256px_0px_overlap" / "features_uni_v1"
    folder.mkdir(parents=True)
    path = folder / "TCGA-XX.h5"
    with h5py.File(path, "w") as f:
        f["features"] = features[None]  # (1, N, D)
        d = f.create_dataset("coords", data=coords[None])
        d.attrs["patch_size"] = 256
        d.attrs["patch_size_level0"] = 512
        d.attrs["target_magnification"] = 20
    assert detect_layout(path) == "trident"
    bag = load_bag(path)
    assert bag.layout == "trident"
    np.testing.assert_array_equal(bag.features, features)
    np.testing.assert_array_equal(bag.coords, coords)
    assert bag.attrs["patch_size_level0"] == 512


def test_failure_while_writing_leaves_no_file(tmp_path, monkeypatch):
    features, coords = _arrays()
    target = tmp_path / "bags" / "s.h5"
    original = h5py.Group.create_dataset

    def failing(self, name, *args, **kwargs):
        if name == "coords":  # after features were written to the temporary file
            raise OSError("disk full")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="disk full"):
        write_bag(target, features, coords)
    assert list((tmp_path / "bags").iterdir()) == []


@pytest.mark.parametrize(
    ("coords", "pitch"),
    [
        ([[0, 0], [224, 0], [0, 224], [224, 224]], 224),  # full regular grid
        ([[1000, 0], [1448, 0], [1000, 1344], [2344, 448]], 448),  # missing patches (2, 3 pitches)
        ([[10, 0], [234, 224], [458, 0]], 224),  # x and y start at different origins
        ([[0, 0], [0, 256], [0, 768]], 256),  # one column: the pitch comes from y
        ([[0, 0], [896, 0], [2240, 0]], 448),  # no two neighbours: gaps 2 and 3 pitches
        ([[5.0, 7.0], [229.0, 7.0]], 224),  # float coords of an integer grid
    ],
)
def test_grid_pitch_on_irregular_grids(coords, pitch):
    from histomil.bags.io import grid_pitch

    assert grid_pitch(np.asarray(coords)) == pitch
    assert grid_pitch(torch.tensor(coords)) == pitch


def test_grid_pitch_of_a_single_patch_is_an_error():
    from histomil.bags.io import grid_pitch

    with pytest.raises(BagError, match="single position"):
        grid_pitch(np.array([[448, 896]]))
    with pytest.raises(BagError, match="single position"):
        grid_pitch(np.array([[448, 896], [448, 896]]))  # the same position twice
    with pytest.raises(BagError, match=r"coords must be \(N, 2\)"):
        grid_pitch(np.zeros((3, 3)))


def test_read_bag_attrs_and_bag_file_attrs(tmp_path):
    from histomil.bags.dataset import bag_file_attrs

    write_bag(tmp_path / "a.h5", np.ones((2, 3), np.float32), np.array([[0, 0], [224, 0]]),
              attrs={"encoder": "x"}, dataset_attrs={"coords": {"patch_size_level0": 224}})  # fmt: skip
    path, attrs = bag_file_attrs(tmp_path, "a")
    assert path == str(tmp_path / "a.h5")
    assert attrs["encoder"] == "x" and attrs["coords.patch_size_level0"] == 224
    assert bag_file_attrs(tmp_path, "missing") == (None, {})
