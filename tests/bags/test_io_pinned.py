"""Pinned bag io (issue 22): stored dtypes, layout detection, attributes, encoders, exact errors.

Every expected value here is stated by hand from the documented file format (module docstring of
:mod:`histomil.bags.io`): what lands in the HDF5 file, which layout a file is read as, which
attributes win, which encoder a bag belongs to, and the exact message of each refusal.
"""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import torch

from histomil import __version__
from histomil.bags.io import (
    BagData,
    BagError,
    check_one_encoder,
    detect_layout,
    encoder_of,
    grid_pitch,
    load_bag,
    read_bag_attrs,
    validate_arrays,
    write_bag,
)


class _NotATensor:
    """A picklable object that ``torch.load(weights_only=True)`` must refuse."""

    def __init__(self) -> None:
        self.payload = 1


def _h5(path, **datasets):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    return path


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


# --- BagData -------------------------------------------------------------------------------------


def test_bag_data_counts_rows_and_columns():
    bag = BagData(np.zeros((3, 5), np.float32))
    assert bag.n_instances == 3 and bag.feature_dim == 5
    assert isinstance(bag.n_instances, int) and isinstance(bag.feature_dim, int)
    assert bag.attrs == {} and bag.layout == "histomil" and bag.coords is None


# --- validate_arrays -----------------------------------------------------------------------------


def test_validate_accepts_one_patch_and_one_dimension():
    validate_arrays("s.h5", np.zeros((1, 1), np.float32), np.zeros((1, 2)), {"tissue": np.ones(1)})
    validate_arrays("s.h5", np.zeros((2, 3), np.float32))  # coords and extras optional


def test_validate_counts_bad_rows_not_bad_values():
    # rows 0 and 1 are bad (both in column 0), row 2 is fine: 2 of 3 rows, 2 bad values
    features = np.array([[np.nan, 1.0], [np.inf, 2.0], [3.0, 4.0]], np.float32)
    message = (
        "s.h5: 2 of 3 feature rows contain NaN or Inf; re-extract this slide "
        "(try --precision float32)"
    )
    with pytest.raises(BagError, match=_exact(message)):
        validate_arrays("s.h5", features)
    # one bad row with two bad values is still one row
    with pytest.raises(BagError, match=r"^s\.h5: 1 of 3 feature rows"):
        validate_arrays("s.h5", np.array([[np.nan, -np.inf], [0, 0], [0, 0]], np.float32))


def test_validate_messages_are_exact():
    with pytest.raises(BagError, match=_exact("s.h5: features have 0 dimensions")):
        validate_arrays("s.h5", np.zeros((3, 0), np.float32))
    with pytest.raises(BagError, match=_exact("s.h5: features must be 2-D (N, D), got shape (3,)")):
        validate_arrays("s.h5", np.zeros(3, np.float32))
    with pytest.raises(
        BagError,
        match=_exact("s.h5: empty bag (0 patches); re-run extraction or drop the slide"),
    ):
        validate_arrays("s.h5", np.zeros((0, 4), np.float32))
    with pytest.raises(
        BagError,
        match=_exact("s.h5: coords shape (3, 3) does not match features (3, 4); expected (3, 2)"),
    ):
        validate_arrays("s.h5", np.zeros((3, 4), np.float32), np.zeros((3, 3)))
    with pytest.raises(BagError, match=r"coords shape \(6,\) does not match"):
        validate_arrays("s.h5", np.zeros((3, 4), np.float32), np.zeros(6))


def test_validate_extras_must_be_one_axis_of_n():
    features = np.zeros((3, 4), np.float32)
    message = "s.h5: overlap shape (3, 1) does not match 3 feature rows; expected (3,)"
    with pytest.raises(BagError, match=_exact(message)):  # right length, but 2-D
        validate_arrays("s.h5", features, None, {"overlap": np.zeros((3, 1))})
    # a None extra is skipped and the ones after it are still checked
    with pytest.raises(BagError, match="tissue shape"):
        validate_arrays("s.h5", features, None, {"patch_labels": None, "tissue": np.zeros(2)})


# --- write_bag -----------------------------------------------------------------------------------


def test_write_stores_the_documented_dtypes_and_attrs(tmp_path):
    path = write_bag(
        tmp_path / "s.h5",
        [[1.0, 2.0], [3.0, 4.0]],  # lists are accepted
        np.array([[0, 0], [224, 0]], np.int32),
        patch_labels=[1, -1],
        overlap=np.array([0.5, 1.0], np.float64),
        tissue=[1, 0],
        attn_target=np.array([0.25, 0.75], np.float64),
        attrs={"encoder": "uni", "source": tmp_path / "x.svs", "flag": True, "skip": None},
        dataset_attrs={"coords": {"patch_size_level0": 224, "none": None}},
    )
    with h5py.File(path) as f:
        assert f["features"].dtype == np.float32
        assert f["features"].chunks is not None  # chunked, as CLAM/TRIDENT readers expect
        assert f["coords"].dtype == np.int64
        assert f["patch_labels"].dtype == np.int8
        for name in ("overlap", "tissue", "attn_target"):
            assert f[name].dtype == np.float32, name
        np.testing.assert_array_equal(f["tissue"][()], [1.0, 0.0])
        attrs = dict(f.attrs)
        coords_attrs = dict(f["coords"].attrs)
    assert attrs["histomil_version"] == __version__
    assert attrs["feature_dim"] == 2 and attrs["feature_dtype"] == "float32"
    assert attrs["encoder"] == "uni" and attrs["source"] == str(tmp_path / "x.svs")
    assert bool(attrs["flag"]) is True
    assert "skip" not in attrs
    assert coords_attrs == {"patch_size_level0": 224}


def test_write_keeps_a_given_version_and_stores_false(tmp_path):
    path = write_bag(
        tmp_path / "s.h5",
        np.ones((1, 3), np.float32),
        np.zeros((1, 2)),
        attrs={"histomil_version": "0.0.1", "flag": np.bool_(False)},
    )
    with h5py.File(path) as f:
        assert f.attrs["histomil_version"] == "0.0.1"
        assert bool(f.attrs["flag"]) is False


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_write_refuses_an_unknown_dtype_and_a_float16_overflow(tmp_path):
    features = np.ones((2, 3), np.float32)
    with pytest.raises(
        ValueError, match=_exact("dtype must be one of ('float32', 'float16'), got 'float64'")
    ):
        write_bag(tmp_path / "a.h5", features, np.zeros((2, 2)), dtype="float64")
    features[1, 2] = 1e6  # finite in float32, inf in float16 (max 65504)
    path = tmp_path / "b.h5"
    message = f"{path}: features overflow float16; write them as float32"
    with pytest.raises(BagError, match=_exact(message)):
        write_bag(path, features, np.zeros((2, 2)), dtype="float16")
    assert not path.exists()
    write_bag(path, features, np.zeros((2, 2)))  # float32 is fine
    assert load_bag(path).features[1, 2] == 1e6


# --- read_bag_attrs ------------------------------------------------------------------------------


def test_read_bag_attrs_of_hdf5_suffixes_and_of_a_pt(tmp_path):
    for name in ("a.h5", "a.hdf5"):
        write_bag(
            tmp_path / name,
            np.ones((2, 3), np.float32),
            np.zeros((2, 2)),
            attrs={"encoder": "x"},
            dataset_attrs={"coords": {"patch_size": 256}},
        )
        attrs = read_bag_attrs(tmp_path / name)
        assert attrs["encoder"] == "x" and attrs["coords.patch_size"] == 256, name
    # no coords dataset: the file attributes only
    path = _h5(tmp_path / "n.h5", features=np.ones((2, 3), np.float32))
    with h5py.File(path, "a") as f:
        f.attrs["encoder"] = "y"
    assert read_bag_attrs(path) == {"encoder": "y"}
    torch.save(torch.ones(2, 3), tmp_path / "a.pt")
    assert read_bag_attrs(tmp_path / "a.pt") == {}


# --- grid_pitch ----------------------------------------------------------------------------------


def test_grid_pitch_rounds_float_coords_and_refuses_one_axis():
    # 223.6 rounds to 224 (a truncation would give 223 and a pitch of 1)
    assert grid_pitch(np.array([[0.4, 0.0], [223.6, 0.0], [448.0, 0.0]])) == 224
    with pytest.raises(BagError, match=_exact("coords must be (N, 2), got (4,)")):
        grid_pitch(np.zeros(4))
    with pytest.raises(
        BagError,
        match=_exact("cannot infer the patch grid spacing from coords with a single position"),
    ):
        grid_pitch(np.array([[1, 2]]))


# --- detect_layout -------------------------------------------------------------------------------


def test_detect_layout_reads_each_marker_alone(tmp_path):
    f = np.ones((2, 3), np.float32)
    c = np.zeros((2, 2), np.int64)
    # ours: either attribute alone is enough
    only_encoder = _h5(tmp_path / "a" / "enc.h5", features=f, coords=c)
    with h5py.File(only_encoder, "a") as h:
        h.attrs["encoder"] = "uni"
    assert detect_layout(only_encoder) == "histomil"
    only_version = write_bag(tmp_path / "a" / "ver.h5", f, c)  # no encoder attribute
    assert detect_layout(only_version) == "histomil"
    # TRIDENT: the features_<encoder> folder alone, or the coords attribute alone
    assert detect_layout(_h5(tmp_path / "features_uni" / "t.h5", features=f, coords=c)) == "trident"
    elsewhere = _h5(tmp_path / "b" / "t.h5", features=f, coords=c)
    with h5py.File(elsewhere, "a") as h:
        h["coords"].attrs["patch_size_level0"] = 512
    assert detect_layout(elsewhere) == "trident"
    # a file without coords and markers is CLAM's
    assert detect_layout(_h5(tmp_path / "b" / "plain.h5", features=f)) == "clam_h5"
    assert detect_layout(tmp_path / "b" / "x.pt") == "clam_pt"  # by suffix only
    h5 = _h5(tmp_path / "b" / "y.hdf5", features=f, coords=c)
    assert detect_layout(h5) == "clam_h5"


def test_detect_layout_and_load_errors_are_exact(tmp_path):
    with pytest.raises(
        BagError,
        match=_exact(f"{tmp_path / 'x.npy'}: unknown feature file type; expected .h5 or .pt"),
    ):
        detect_layout(tmp_path / "x.npy")
    broken = tmp_path / "broken.h5"
    broken.write_text("not hdf5")
    with pytest.raises(BagError, match=rf"^{re.escape(str(broken))}: cannot be opened as HDF5 \("):
        load_bag(broken)
    with pytest.raises(BagError, match=rf"^{re.escape(str(broken))}: cannot be read as HDF5 \("):
        load_bag(broken, layout="clam_h5")
    with pytest.raises(
        ValueError,
        match=_exact("unknown layout 'npy'; valid: histomil, clam_h5, clam_pt, trident"),
    ):
        load_bag(broken, layout="npy")
    missing = tmp_path / "missing.h5"
    with pytest.raises(BagError, match=_exact(f"{missing}: bag file does not exist")):
        load_bag(missing)
    (tmp_path / "dir.h5").mkdir()
    with pytest.raises(BagError, match="does not exist"):  # a folder is not a bag file
        load_bag(tmp_path / "dir.h5")


# --- load_bag (HDF5) -----------------------------------------------------------------------------


def test_load_h5_casts_foreign_dtypes(tmp_path):
    path = _h5(
        tmp_path / "h5_files" / "s.h5",
        features=np.arange(6, dtype=np.float64).reshape(3, 2),
        coords=np.array([[0, 0], [1, 0], [2, 0]], np.int32),
        patch_labels=np.array([1, 0, -1], np.int64),
        tissue=np.array([1, 0, 1], np.int64),
    )
    bag = load_bag(path)
    assert bag.layout == "clam_h5"
    assert bag.features.dtype == np.float32 and bag.coords.dtype == np.int64
    assert bag.patch_labels.dtype == np.int8 and bag.tissue.dtype == np.float32
    np.testing.assert_array_equal(bag.patch_labels, [1, 0, -1])
    assert bag.overlap is None and bag.attn_target is None
    assert bag.n_instances == 3 and bag.feature_dim == 2


def test_load_h5_without_coords_and_with_one_patch(tmp_path):
    bag = load_bag(_h5(tmp_path / "s.h5", features=np.ones((1, 4), np.float32)))
    assert bag.coords is None and bag.features.shape == (1, 4)  # (1, D) is not a batch axis


def test_load_h5_refuses_a_batch_of_two_and_bad_extras(tmp_path):
    two = _h5(tmp_path / "two.h5", features=np.ones((2, 3, 4), np.float32))
    with pytest.raises(BagError, match="features must be 2-D"):  # only a batch axis of 1 goes
        load_bag(two)
    labels = _h5(
        tmp_path / "labels.h5",
        features=np.ones((3, 4), np.float32),
        patch_labels=np.zeros(2, np.int8),
    )
    with pytest.raises(BagError, match=rf"^{re.escape(str(labels))}: patch_labels shape \(2,\)"):
        load_bag(labels)
    text = _h5(tmp_path / "text.h5", features=np.array([[b"a", b"b"]]))
    with pytest.raises(BagError, match=_exact(f"{text}: features have non-numeric dtype |S1")):
        load_bag(text)


def test_load_h5_missing_features_lists_what_was_found(tmp_path):
    path = _h5(tmp_path / "a.h5", coords=np.zeros((2, 2)), tissue=np.ones(2))
    with pytest.raises(
        BagError, match=_exact(f"{path}: no 'features' dataset (found: coords, tissue)")
    ):
        load_bag(path, layout="clam_h5")
    empty = _h5(tmp_path / "b.h5")
    with pytest.raises(BagError, match=_exact(f"{empty}: no 'features' dataset (found: nothing)")):
        load_bag(empty, layout="clam_h5")


def test_load_h5_attributes_file_wins_over_coords_and_bytes_are_decoded(tmp_path):
    path = _h5(tmp_path / "s.h5", features=np.ones((2, 3), np.float32), coords=np.zeros((2, 2)))
    with h5py.File(path, "a") as f:
        f.attrs["patch_size"] = 224  # the file's own value
        f.attrs["name"] = np.bytes_(b"caf\xc3\xa9")  # CLAM-style fixed-length bytes
        f.attrs["bad"] = np.bytes_(b"caf\xe9")  # not UTF-8
        f["coords"].attrs["patch_size"] = 256
        f["coords"].attrs["patch_level"] = np.int64(1)
    attrs = load_bag(path).attrs
    assert attrs["patch_size"] == 224  # the file attribute is kept
    assert attrs["patch_level"] == 1 and type(attrs["patch_level"]) is int
    assert type(attrs["patch_size"]) is int
    assert attrs["name"] == "café"
    assert attrs["bad"] == "caf\ufffd"


# --- load_bag (CLAM .pt) -------------------------------------------------------------------------


def test_load_pt_from_a_dict_with_a_bags_sibling(tmp_path):
    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    (tmp_path / "pt_files").mkdir()
    torch.save({"features": torch.from_numpy(features)}, tmp_path / "pt_files" / "s.pt")
    sibling = write_bag(
        tmp_path / "bags" / "s.h5",
        features,
        np.array([[0, 0], [1, 0], [2, 0], [3, 0]]),
        patch_labels=np.array([0, 1, 1, 0]),
        attrs={"encoder": "conch"},
    )
    bag = load_bag(tmp_path / "pt_files" / "s.pt")
    assert bag.layout == "clam_pt"
    np.testing.assert_array_equal(bag.features, features)
    np.testing.assert_array_equal(bag.coords[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(bag.patch_labels, [0, 1, 1, 0])
    assert bag.patch_labels.dtype == np.int8 and bag.tissue is None
    assert bag.attrs["coords_source"] == str(sibling) and bag.attrs["encoder"] == "conch"


def test_load_pt_refusals_are_exact(tmp_path):
    (tmp_path / "pt_files").mkdir()
    no_features = tmp_path / "pt_files" / "a.pt"
    torch.save({"feats": torch.ones(2, 3)}, no_features)
    with pytest.raises(
        BagError, match=_exact(f"{no_features}: expected a (N, D) tensor, got dict")
    ):
        load_bag(no_features)
    unsafe = tmp_path / "pt_files" / "b.pt"
    torch.save({"features": torch.ones(2, 3), "extra": _NotATensor()}, unsafe)
    with pytest.raises(
        BagError, match=rf"^{re.escape(str(unsafe))}: cannot be read as a torch tensor file \("
    ):
        load_bag(unsafe)  # weights_only: arbitrary pickled objects are not loaded


# --- encoder_of / check_one_encoder --------------------------------------------------------------


def test_encoder_of_each_source(tmp_path):
    f, c = np.ones((2, 3), np.float32), np.zeros((2, 2))
    assert encoder_of(write_bag(tmp_path / "a.hdf5", f, c, attrs={"encoder": "uni"})) == "uni"
    # TRIDENT keeps it on the features dataset; the file attribute wins when both exist
    tri = _h5(tmp_path / "t.h5", features=f)
    with h5py.File(tri, "a") as h:
        h["features"].attrs["encoder"] = "virchow"
    assert encoder_of(tri) == "virchow"
    with h5py.File(tri, "a") as h:
        h.attrs["encoder"] = np.bytes_(b"gigapath")
    assert encoder_of(tri) == "gigapath"
    # "None" and "" are unknown; the folder name is the fallback
    for value in ("None", ""):
        p = _h5(tmp_path / "features_conch_v15" / f"n{len(value)}.h5", features=f)
        with h5py.File(p, "a") as h:
            h.attrs["encoder"] = value
        assert encoder_of(p) == "conch_v15", value
        q = _h5(tmp_path / "other" / f"n{len(value)}.h5", features=f)
        with h5py.File(q, "a") as h:
            h.attrs["encoder"] = value
        assert encoder_of(q) is None, value
    broken = tmp_path / "features_uni" / "broken.h5"
    broken.parent.mkdir()
    broken.write_text("not hdf5")
    assert encoder_of(broken) == "uni"
    # a CLAM .pt: the sibling's attribute (h5_files or bags), else nothing
    for sub in ("h5_files", "bags"):
        root = tmp_path / sub / "run"
        (root / "pt_files").mkdir(parents=True)
        torch.save(torch.ones(2, 3), root / "pt_files" / "s.pt")
        write_bag(root / sub / "s.h5", f, c, attrs={"encoder": f"enc_{sub}"})
        assert encoder_of(root / "pt_files" / "s.pt") == f"enc_{sub}"
    torch.save(torch.ones(2, 3), tmp_path / "lonely.pt")
    assert encoder_of(tmp_path / "lonely.pt") is None


def test_check_one_encoder_message_and_return(tmp_path):
    f, c = np.ones((2, 3), np.float32), np.zeros((2, 2))

    def bag(name, encoder):
        attrs = {} if encoder is None else {"encoder": encoder}
        return write_bag(tmp_path / f"{name}.h5", f, c, attrs=attrs)

    assert check_one_encoder({}) is None
    assert check_one_encoder({"u": bag("u", None)}) is None
    same = {s: bag(s, "uni") for s in ("s1", "s2")} | {"u": bag("u", None)}
    assert check_one_encoder(same) == "uni"  # an unrecorded bag does not conflict
    mixed = {s: bag(s, "uni") for s in ("s1", "s2", "s3", "s4")} | {"t1": bag("t1", "conch")}
    message = (
        "bags from different encoders cannot be mixed in one run: conch (1: t1); "
        "uni (4: s1, s2, s3); re-extract the slides with one encoder or point --bags at one "
        "encoder's folder"
    )
    with pytest.raises(BagError, match=_exact(message)):
        check_one_encoder(mixed)
    three = mixed | {"v1": bag("v1", "virchow")}
    with pytest.raises(BagError, match=r"conch \(1: t1\); uni \(4: .*\); virchow \(1: v1\);"):
        check_one_encoder(three)


def test_load_pt_maps_to_the_cpu_without_unpickling_objects(tmp_path, monkeypatch):
    """``weights_only=True`` is spelled out (older torch defaults to False, i.e. arbitrary
    pickles run), and ``map_location="cpu"`` lets a GPU-saved tensor load on a CPU machine."""
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    torch.save(torch.ones(2, 3), tmp_path / "a.pt")
    assert load_bag(tmp_path / "a.pt").features.shape == (2, 3)
    assert calls == [{"map_location": "cpu", "weights_only": True}]


def test_load_pt_errors_name_the_pt_file(tmp_path):
    path = tmp_path / "nan.pt"
    torch.save(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), path)
    with pytest.raises(BagError, match=rf"^{re.escape(str(path))}: 1 of 2 feature rows"):
        load_bag(path)


def test_encoder_of_an_undecodable_name_is_replaced_not_an_error(tmp_path):
    path = _h5(tmp_path / "s.h5", features=np.ones((2, 3), np.float32))
    with h5py.File(path, "a") as h:
        h.attrs["encoder"] = np.bytes_(b"uni\xff")  # not UTF-8
    assert encoder_of(path) == "uni\ufffd"
