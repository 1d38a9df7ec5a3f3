"""Read and write per-slide bag files: ours, CLAM (`h5_files`, `pt_files`) and TRIDENT.

Our bag file is one HDF5 per slide with CLAM/TRIDENT-compatible dataset names:
``features`` (N, D) float32 (or float16), ``coords`` (N, 2) int64 level-0 top-left x, y,
optional ``patch_labels`` (N,) int8, ``overlap`` / ``tissue`` / ``attn_target`` (N,) float32,
and file attributes (patch geometry, mpp, encoder, weights identity, precision, version).
Every reader returns a :class:`BagData` with float32 features and validated shapes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histomil._io import atomic_path

LAYOUTS = ("histomil", "clam_h5", "clam_pt", "trident")
OPTIONAL_DATASETS = {
    "patch_labels": np.int8,
    "overlap": np.float32,
    "tissue": np.float32,
    "attn_target": np.float32,
}
FEATURE_DTYPES = ("float32", "float16")


class BagError(ValueError):
    """A bag file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class BagData:
    """The arrays of one bag file. ``features``: (N, D) float32; the rest (N, ...) or None."""

    features: np.ndarray  # (N, D) float32
    coords: np.ndarray | None = None  # (N, 2) int64
    patch_labels: np.ndarray | None = None  # (N,) int8
    overlap: np.ndarray | None = None  # (N,) float32
    tissue: np.ndarray | None = None  # (N,) float32
    attn_target: np.ndarray | None = None  # (N,) float32
    attrs: dict[str, Any] = field(default_factory=dict)
    layout: str = "histomil"

    @property
    def n_instances(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])


def validate_arrays(
    source: str | os.PathLike,
    features: np.ndarray,
    coords: np.ndarray | None = None,
    extras: Mapping[str, np.ndarray | None] | None = None,
) -> None:
    """Raise :class:`BagError` naming ``source`` when shapes or values are unusable.

    ``features`` (N, D) finite and N > 0; ``coords`` (N, 2); every extra (N,).
    """
    if features.ndim != 2:
        raise BagError(f"{source}: features must be 2-D (N, D), got shape {tuple(features.shape)}")
    n, d = features.shape
    if n == 0:
        raise BagError(f"{source}: empty bag (0 patches); re-run extraction or drop the slide")
    if d == 0:
        raise BagError(f"{source}: features have 0 dimensions")
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise BagError(
            f"{source}: {bad} of {n} feature rows contain NaN or Inf; re-extract this slide "
            "(try --precision float32)"
        )
    if coords is not None and (coords.ndim != 2 or coords.shape != (n, 2)):
        raise BagError(
            f"{source}: coords shape {tuple(coords.shape)} does not match features "
            f"{tuple(features.shape)}; expected ({n}, 2)"
        )
    for name, arr in (extras or {}).items():
        if arr is None:
            continue
        if arr.ndim != 1 or arr.shape[0] != n:
            raise BagError(
                f"{source}: {name} shape {tuple(arr.shape)} does not match {n} feature rows; "
                f"expected ({n},)"
            )


def write_bag(
    path: str | os.PathLike,
    features: np.ndarray,
    coords: np.ndarray,
    *,
    patch_labels: np.ndarray | None = None,
    overlap: np.ndarray | None = None,
    tissue: np.ndarray | None = None,
    attn_target: np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
    dtype: str = "float32",
    dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Atomically write a bag file; ``features`` (N, D) stored as ``dtype`` (float32|float16).

    ``coords`` (N, 2) int64; optional per-patch arrays (N,). ``attrs`` are stored as file
    attributes (None values are skipped); ``dataset_attrs`` ``{"coords": {...}}`` on datasets
    (the geometry CLAM and TRIDENT read, :mod:`histomil.bags.layouts`). Returns the path.
    """
    import h5py

    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
    path = Path(path)
    features = np.asarray(features)
    coords = np.asarray(coords)
    extras = {
        "patch_labels": patch_labels,
        "overlap": overlap,
        "tissue": tissue,
        "attn_target": attn_target,
    }
    extras = {k: None if v is None else np.asarray(v) for k, v in extras.items()}
    validate_arrays(path, features, coords, extras)
    stored = features.astype(dtype)
    if not np.isfinite(stored).all():
        raise BagError(f"{path}: features overflow {dtype}; write them as float32")
    from histomil import __version__

    all_attrs = dict(attrs or {})
    all_attrs.setdefault("histomil_version", __version__)
    all_attrs["feature_dim"] = int(features.shape[1])
    all_attrs["feature_dtype"] = dtype
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=stored, chunks=True)
            f.create_dataset("coords", data=coords.astype(np.int64))
            for name, arr in extras.items():
                if arr is not None:
                    f.create_dataset(name, data=arr.astype(OPTIONAL_DATASETS[name]))
            for key, value in all_attrs.items():
                if value is not None:
                    f.attrs[key] = _attr_value(value)
            for name, values in (dataset_attrs or {}).items():
                for key, value in values.items():
                    if value is not None:
                        f[name].attrs[key] = _attr_value(value)
    return path


def _attr_value(value: Any) -> Any:
    if isinstance(value, (Path, str)):
        return str(value)  # also plain-str subclasses such as torch's TorchVersion
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return value


def _clean_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        elif isinstance(value, np.generic):
            value = value.item()
        out[str(key)] = value
    return out


def read_bag_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """File attributes of an HDF5 bag plus its ``coords`` attributes as ``coords.<key>`` (values
    as h5py returns them); empty for a ``.pt`` bag, which has none."""
    path = Path(path)
    if path.suffix not in (".h5", ".hdf5"):
        return {}
    import h5py

    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs.items())
        if "coords" in f:
            attrs.update({f"coords.{k}": v for k, v in f["coords"].attrs.items()})
    return attrs


def grid_pitch(coords: Any) -> int:
    """Spacing of a patch grid in level-0 px from its coords (N, 2) (numpy or torch).

    The greatest common divisor of the gaps between distinct x values and between distinct y
    values: exact on the integer grids tiling writes, with patches missing anywhere (gaps of 2
    and 3 pitches still give the pitch), and with x and y starting at different origins.
    Raises :class:`BagError` when no two patches differ in x or y (a single patch).
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise BagError(f"coords must be (N, 2), got {c.shape}")
    c = np.rint(c).astype(np.int64)
    gaps = np.concatenate([np.diff(np.unique(c[:, axis])) for axis in range(2)])
    if gaps.size == 0:
        raise BagError("cannot infer the patch grid spacing from coords with a single position")
    return int(np.gcd.reduce(gaps))


def detect_layout(path: str | os.PathLike) -> str:
    """Guess the layout of a feature file from its suffix, folder and attributes."""
    path = Path(path)
    if path.suffix == ".pt":
        return "clam_pt"
    if path.suffix not in (".h5", ".hdf5"):
        raise BagError(f"{path}: unknown feature file type; expected .h5 or .pt")
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "encoder" in f.attrs or "histomil_version" in f.attrs:
                return "histomil"
            coords_attrs = f["coords"].attrs if "coords" in f else {}
            if path.parent.name.startswith("features_") or "patch_size_level0" in coords_attrs:
                return "trident"
    except OSError as exc:
        raise BagError(
            f"{path}: cannot be opened as HDF5 ({exc}); delete it and re-extract"
        ) from exc
    return "clam_h5"


def load_bag(path: str | os.PathLike, layout: str | None = None) -> BagData:
    """Read a bag from any supported layout (auto-detected unless ``layout`` is given).

    Returns features as float32 (N, D) plus coords/labels when present; raises
    :class:`BagError` naming the file on missing datasets, bad shapes, NaN/Inf or empty bags.
    """
    path = Path(path)
    if not path.is_file():
        raise BagError(f"{path}: bag file does not exist")
    layout = layout or detect_layout(path)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if layout == "clam_pt":
        return _load_pt(path)
    return _load_h5(path, layout)


def _load_h5(path: Path, layout: str) -> BagData:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "features" not in f:
                raise BagError(
                    f"{path}: no 'features' dataset (found: {', '.join(f.keys()) or 'nothing'})"
                )
            features = np.asarray(f["features"][()])
            coords = np.asarray(f["coords"][()]) if "coords" in f else None
            extras = {k: np.asarray(f[k][()]) for k in OPTIONAL_DATASETS if k in f}
            attrs = _clean_attrs(f.attrs)
            if "coords" in f:  # TRIDENT and CLAM keep patch geometry on the coords dataset
                for key, value in _clean_attrs(f["coords"].attrs).items():
                    attrs.setdefault(key, value)
    except OSError as exc:
        raise BagError(f"{path}: cannot be read as HDF5 ({exc}); delete it and re-extract") from exc
    features = _squeeze_batch(path, features)
    if coords is not None:
        coords = _squeeze_batch(path, coords)
    return _finish(path, features, coords, extras, attrs, layout)


def _squeeze_batch(path: Path, arr: np.ndarray) -> np.ndarray:
    """Drop the leading batch axis TRIDENT/CLAM sometimes keep: (1, N, D) -> (N, D)."""
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0]
    return arr


def _finish(path, features, coords, extras, attrs, layout) -> BagData:
    if not np.issubdtype(features.dtype, np.number):
        raise BagError(f"{path}: features have non-numeric dtype {features.dtype}")
    validate_arrays(path, features, coords, extras)
    if coords is not None:
        coords = coords.astype(np.int64, copy=False)
    cast = {k: v.astype(OPTIONAL_DATASETS[k], copy=False) for k, v in extras.items()}
    return BagData(
        features=features.astype(np.float32, copy=False),
        coords=coords,
        attrs=attrs,
        layout=layout,
        **cast,
    )


def _load_pt(path: Path) -> BagData:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/unsafe files
        raise BagError(f"{path}: cannot be read as a torch tensor file ({exc})") from exc
    if isinstance(obj, dict) and "features" in obj:
        obj = obj["features"]
    if not isinstance(obj, torch.Tensor):
        raise BagError(f"{path}: expected a (N, D) tensor, got {type(obj).__name__}")
    features = _squeeze_batch(path, obj.detach().float().numpy())
    coords, extras, attrs = None, {}, {}
    siblings = [path.parent.parent / d / f"{path.stem}.h5" for d in ("h5_files", "bags")]
    sibling = next((s for s in siblings if s.is_file()), None)
    if sibling is not None:  # CLAM keeps coords in h5_files/<id>.h5 next to pt_files/
        h5 = _load_h5(sibling, detect_layout(sibling))
        coords, attrs = h5.coords, dict(h5.attrs)
        extras = {k: getattr(h5, k) for k in OPTIONAL_DATASETS if getattr(h5, k) is not None}
        attrs["coords_source"] = str(sibling)
    return _finish(path, features, coords, extras, attrs, "clam_pt")


def encoder_of(path: str | os.PathLike) -> str | None:
    """The encoder a feature file was made with: our ``encoder`` attribute (on the file, or on
    the sibling ``h5_files``/``bags`` file of a CLAM ``.pt``), TRIDENT's ``encoder`` attribute
    on ``features``, else the ``features_<encoder>`` folder name; None when unknown."""
    import h5py

    path = Path(path)
    if path.suffix == ".pt":
        siblings = [path.parent.parent / d / f"{path.stem}.h5" for d in ("h5_files", "bags")]
        path = next((s for s in siblings if s.is_file()), path)
    if path.suffix in (".h5", ".hdf5"):
        try:
            with h5py.File(path, "r") as f:
                value = f.attrs.get("encoder")
                if value is None and "features" in f:
                    value = f["features"].attrs.get("encoder")
        except OSError:
            value = None  # unreadable files are reported by load_bag
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if value not in (None, "", "None"):
            return str(value)
    if path.parent.name.startswith("features_"):
        return path.parent.name[len("features_") :]
    return None


def check_one_encoder(paths: Mapping[str, str | os.PathLike]) -> str | None:
    """Raise :class:`BagError` when the bags ``{slide_id: path}`` come from different encoders
    (features of two encoders are not comparable); return the encoder (None if unrecorded)."""
    seen: dict[str, list[str]] = {}
    for sid, path in paths.items():
        enc = encoder_of(path)
        if enc is not None:
            seen.setdefault(enc, []).append(sid)
    if len(seen) > 1:
        parts = [f"{enc} ({len(ids)}: {', '.join(ids[:3])})" for enc, ids in sorted(seen.items())]
        raise BagError(
            "bags from different encoders cannot be mixed in one run: "
            + "; ".join(parts)
            + "; re-extract the slides with one encoder or point --bags at one encoder's folder"
        )
    return next(iter(seen), None)
