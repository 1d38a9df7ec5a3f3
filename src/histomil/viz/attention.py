"""Per-slide attention for visualisation: read a run's attention file or a bag + attention array.

Everything here works from stored coordinates and attention values; nothing re-segments or
re-extracts a slide. Sources understood by :func:`load_attention`:

- a training run directory ``RUN/`` plus a slide id (and optionally a fold): reads
  ``RUN/attention/<fold>/<slide_id>.h5``;
- one attention file ``attention/<k>/<slide_id>.h5`` (datasets ``coords``, ``attention``,
  ``scores``, optional ``instance_prob`` / ``patch_labels``);
- a bag file in any layout (histomil, CLAM ``h5_files``, TRIDENT ``features_<enc>``) together with
  an attention array (``.npy`` or an ``.h5`` with an ``attention`` dataset).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np


class VizError(ValueError):
    """An input the visualisation cannot use; the message names the file and what to do."""


@dataclass(frozen=True)
class AttentionData:
    """Coordinates and per-patch values of one slide. Arrays are (N, 2) / (N,)."""

    slide_id: str
    coords: np.ndarray  # (N, 2) int64 level-0 top-left x, y
    attention: np.ndarray  # (N,) float pooling weights
    patch_size_level0: int
    scores: np.ndarray | None = None  # (N,) raw attention scores
    instance_prob: np.ndarray | None = None  # (N,)
    patch_labels: np.ndarray | None = None  # (N,) int8: 1 lesion, 0 not, -1 unknown
    attrs: dict[str, Any] = field(default_factory=dict)  # label, prob, split, model, paths, ...
    source: Path | None = None
    fold: str | None = None

    @property
    def n_patches(self) -> int:
        return int(self.coords.shape[0])

    def attr_path(self, key: str) -> Path | None:
        """A path attribute (``slide_path``, ``bag_path``, ``annotation_path``) or None."""
        value = self.attrs.get(key)
        if value is None or str(value) in ("", "None", "nan"):
            return None
        return Path(str(value))


def _clean(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_attention_h5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The one reader of attention files (:func:`histomil.training.attention.write_attention`
    writes them) and of the coords of bag files: the datasets we use, plus file attrs as Python
    values (coords attrs merged in, CLAM style). A (1, N, ...) batch axis is dropped."""
    import h5py

    keys = ("coords", "attention", "scores", "instance_prob", "patch_labels", "A", "features")
    try:
        with h5py.File(path, "r") as f:
            arrays = {k: np.asarray(f[k][()]) for k in keys if k in f and k != "features"}
            if "features" in f:
                arrays["_n_features"] = np.asarray(f["features"].shape)
            attrs = {str(k): _clean(v) for k, v in f.attrs.items()}
            if "coords" in f:
                for k, v in f["coords"].attrs.items():
                    attrs.setdefault(str(k), _clean(v))
    except OSError as exc:
        raise VizError(f"{path}: cannot be read as HDF5 ({exc})") from exc
    for key, arr in list(arrays.items()):
        if arr.ndim >= 2 and arr.shape[0] == 1 and key != "_n_features":  # (1, N, ...) batch axis
            arrays[key] = arr[0]
    return arrays, attrs


def infer_patch_size_level0(attrs: dict[str, Any], coords: np.ndarray) -> int:
    """Level-0 patch side from attrs (histomil/TRIDENT), CLAM ``patch_size``/``patch_level``, or
    the coordinate grid pitch (:func:`histomil.bags.io.grid_pitch`) as a last resort."""
    for key in ("patch_size_level0",):
        if attrs.get(key):
            return int(attrs[key])
    if attrs.get("patch_size") and int(attrs.get("patch_level", 0) or 0) == 0:
        downsample = float(attrs.get("downsample", 1) or 1)
        return int(round(int(attrs["patch_size"]) * downsample))
    from histomil.bags.io import BagError, grid_pitch

    try:
        return grid_pitch(coords.reshape(-1, 2))
    except BagError as exc:
        raise VizError(
            "cannot tell the level-0 patch size: no 'patch_size_level0' attribute and a single "
            "patch; give it with HeatmapOptions(patch_size_level0=...) / --patch-size-level0"
        ) from exc


def _check_lengths(path: Path, coords: np.ndarray, **arrays: np.ndarray | None) -> None:
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise VizError(f"{path}: coords must be (N, 2), got {coords.shape}")
    for name, arr in arrays.items():
        if arr is not None and arr.reshape(-1).shape[0] != coords.shape[0]:
            raise VizError(
                f"{path}: {name} has {arr.reshape(-1).shape[0]} values but there are "
                f"{coords.shape[0]} patches (coords); was it computed for another bag?"
            )


def load_attention_file(
    path: str | os.PathLike, patch_size_level0: int | None = None
) -> AttentionData:
    """Read one run attention file ``attention/<k>/<slide_id>.h5``."""
    path = Path(path)
    if not path.is_file():
        raise VizError(f"{path}: attention file does not exist")
    arrays, attrs = read_attention_h5(path)
    if "coords" not in arrays or ("attention" not in arrays and "A" not in arrays):
        raise VizError(
            f"{path}: expected datasets 'coords' and 'attention' (found: {', '.join(arrays)})"
        )
    coords = arrays["coords"].astype(np.int64)
    attention = np.asarray(arrays.get("attention", arrays.get("A")), dtype=np.float64).reshape(-1)
    opt = {k: arrays.get(k) for k in ("scores", "instance_prob", "patch_labels")}
    _check_lengths(path, coords, attention=attention, **opt)
    return AttentionData(
        slide_id=str(attrs.get("slide_id") or path.stem),
        coords=coords,
        attention=attention,
        patch_size_level0=patch_size_level0 or infer_patch_size_level0(attrs, coords),
        scores=None if opt["scores"] is None else opt["scores"].astype(np.float64).reshape(-1),
        instance_prob=None
        if opt["instance_prob"] is None
        else opt["instance_prob"].astype(np.float64).reshape(-1),
        patch_labels=None
        if opt["patch_labels"] is None
        else opt["patch_labels"].astype(np.int8).reshape(-1),
        attrs=attrs,
        source=path,
        fold=path.parent.name if path.parent.parent.name == "attention" else None,
    )


def _read_attention_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.asarray(np.load(path), dtype=np.float64).reshape(-1)
    arrays, _ = read_attention_h5(path)
    for key in ("attention", "A", "scores"):
        if key in arrays:
            return arrays[key].astype(np.float64).reshape(-1)
    raise VizError(f"{path}: no 'attention' dataset (found: {', '.join(arrays) or 'nothing'})")


def load_bag_attention(
    bag_path: str | os.PathLike,
    attention_path: str | os.PathLike,
    patch_size_level0: int | None = None,
) -> AttentionData:
    """Coordinates from a bag (histomil, CLAM or TRIDENT layout) + an attention array (N,)."""
    bag_path, attention_path = Path(bag_path), Path(attention_path)
    for p in (bag_path, attention_path):
        if not p.is_file():
            raise VizError(f"{p}: file does not exist")
    arrays, attrs = read_attention_h5(bag_path)
    if "coords" not in arrays:
        raise VizError(
            f"{bag_path}: no 'coords' dataset; heatmaps need patch coordinates (CLAM .pt files "
            "keep them in the sibling h5_files/<id>.h5: pass that file instead)"
        )
    coords = arrays["coords"].astype(np.int64)
    attention = _read_attention_array(attention_path)
    labels = arrays.get("patch_labels")
    _check_lengths(bag_path, coords, attention=attention, patch_labels=labels)
    from histomil._io import slide_id_from_path

    attrs = dict(attrs)
    attrs.setdefault("bag_path", str(bag_path))
    return AttentionData(
        slide_id=str(attrs.get("slide_id") or slide_id_from_path(bag_path)),
        coords=coords,
        attention=attention,
        patch_size_level0=patch_size_level0 or infer_patch_size_level0(attrs, coords),
        patch_labels=None if labels is None else labels.astype(np.int8).reshape(-1),
        attrs=attrs,
        source=bag_path,
    )


def find_attention_file(
    run_dir: str | os.PathLike, slide_id: str, fold: str | int | None = None
) -> Path:
    """``RUN/attention/<fold>/<slide_id>.h5``; without a fold, the fold where the slide was a test
    slide (else the first fold that has it)."""
    root = Path(run_dir) / "attention"
    if not root.is_dir():
        raise VizError(
            f"{run_dir}: no attention/ folder; was the run trained with attention saved?"
        )
    if fold is not None:
        path = root / str(fold) / f"{slide_id}.h5"
        if not path.is_file():
            have = sorted(p.parent.name for p in root.glob(f"*/{slide_id}.h5"))
            raise VizError(
                f"{path} does not exist; slide {slide_id!r} has attention in folds: "
                f"{', '.join(have) or 'none'}"
            )
        return path
    candidates = sorted(root.glob(f"*/{slide_id}.h5"), key=lambda p: _fold_key(p.parent.name))
    if not candidates:
        raise VizError(f"{root}: no attention file for slide {slide_id!r} in any fold")
    for path in candidates:
        _, attrs = _read_h5_attrs(path)
        if str(attrs.get("split", "")) == "test":
            return path
    return candidates[0]


def run_attention_files(run_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(fold, path)`` of every ``RUN/attention/<fold>/<slide_id>.h5``, folds in numeric order
    and slides by name; read each with :func:`read_attention_h5`."""
    root = Path(run_dir) / "attention"
    if not root.is_dir():
        raise VizError(
            f"{run_dir} has no attention files; train with output.attention: true and the "
            "split in output.attention_splits"
        )
    folds = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: _fold_key(p.name))
    return [(d.name, path) for d in folds for path in sorted(d.glob("*.h5"))]


def _fold_key(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def _read_h5_attrs(path: Path) -> tuple[Path, dict[str, Any]]:
    import h5py

    with h5py.File(path, "r") as f:
        return path, {str(k): _clean(v) for k, v in f.attrs.items()}


def load_attention(
    source: str | os.PathLike,
    slide_id: str | None = None,
    fold: str | int | None = None,
    attention_path: str | os.PathLike | None = None,
    patch_size_level0: int | None = None,
) -> AttentionData:
    """Resolve any supported source (run dir, attention file, bag + attention) to AttentionData."""
    source = Path(source)
    if source.is_dir():
        if not slide_id:
            raise VizError(f"{source} is a directory: give the slide id (--slide-id)")
        data = load_attention_file(find_attention_file(source, slide_id, fold), patch_size_level0)
    elif attention_path is not None:
        data = load_bag_attention(source, attention_path, patch_size_level0)
    elif source.is_file():
        arrays, _ = read_attention_h5(source)
        if "attention" not in arrays and "A" not in arrays:
            raise VizError(
                f"{source} has no 'attention' dataset; for a bag file give the attention array "
                "too (--attention FILE.npy|FILE.h5)"
            )
        data = load_attention_file(source, patch_size_level0)
    else:
        raise VizError(f"{source}: no such file or directory")
    if slide_id and data.slide_id != slide_id and not source.is_dir():
        data = replace(data, slide_id=slide_id)
    return data


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """Percentile (0-100): share of the other patches with strictly lower value.

    Ties get the lowest rank of their group, so the many exact zeros of thresholded attention
    stay at the bottom of the scale instead of looking average.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n <= 1:
        return np.full(n, 100.0)
    lower = np.searchsorted(np.sort(values), values, side="left")
    return 100.0 * lower / (n - 1)
