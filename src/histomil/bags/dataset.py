"""Find bag files for manifest rows and load a cohort as in-memory :class:`Bag` objects.

Supported folders (``bags_dir`` may point at any of them or at their parent job folder):
our ``bags/<id>.h5``; CLAM ``h5_files/<id>.h5`` and ``pt_files/<id>.pt``; TRIDENT
``features_<encoder>/<id>.h5`` (also one level deeper, e.g. ``20x_256px_0px_overlap/features_uni/``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd

from histomil.bags.bag import Bag
from histomil.bags.io import BagError, check_one_encoder, load_bag, read_bag_attrs

log = logging.getLogger(__name__)

_H5 = (".h5", ".hdf5")


def _candidate_dirs(bags_dir: Path) -> list[Path]:
    """Folders that may hold bag files, most specific first."""
    dirs = [bags_dir, bags_dir / "bags", bags_dir / "h5_files", bags_dir / "pt_files"]
    dirs += sorted(p for p in bags_dir.glob("features_*") if p.is_dir())
    dirs += sorted(p for p in bags_dir.glob("*/features_*") if p.is_dir())
    return [d for d in dirs if d.is_dir()]


def index_bags(bags_dir: str | os.PathLike) -> dict[str, Path]:
    """Map slide id -> bag file for every bag under ``bags_dir`` (one directory scan).

    An ``.h5`` file wins over a CLAM ``.pt`` of the same id (it carries coords). The same id in
    two TRIDENT ``features_*`` folders (two encoders) is ambiguous and raises :class:`BagError`.
    """
    bags_dir = Path(bags_dir)
    if not bags_dir.is_dir():
        raise BagError(f"bags folder {bags_dir} does not exist; run `histomil extract` first")
    found: dict[str, Path] = {}
    for folder in _candidate_dirs(bags_dir):
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue  # hidden files include in-progress atomic writes
            if path.suffix not in (*_H5, ".pt"):
                continue
            sid = path.stem
            prev = found.get(sid)
            if prev is None or (prev.suffix == ".pt" and path.suffix in _H5):
                found[sid] = path
            elif _is_trident(prev) and _is_trident(path) and prev.parent != path.parent:
                raise BagError(
                    f"slide {sid}: bags in both {prev.parent} and {path.parent}; point "
                    "--bags at the features_<encoder> folder you want"
                )
    return found


def _is_trident(path: Path) -> bool:
    return path.parent.name.startswith("features_")


def find_bag(bags_dir: str | os.PathLike, slide_id: str) -> Path:
    """Return the bag file of ``slide_id`` under ``bags_dir`` (any supported layout)."""
    bags_dir = Path(bags_dir)
    for folder in _candidate_dirs(bags_dir) if bags_dir.is_dir() else []:
        for suffix in (*_H5, ".pt"):
            path = folder / f"{slide_id}{suffix}"
            if path.is_file():
                return path
    raise BagError(
        f"no bag for slide {slide_id} under {bags_dir} (looked for <id>.h5 in ., bags/, "
        "h5_files/, features_*/ and <id>.pt in pt_files/)"
    )


def bag_file_attrs(bags_dir: str | os.PathLike, slide_id: str) -> tuple[str | None, dict]:
    """(path, :func:`histomil.bags.io.read_bag_attrs`) of a slide's bag file, for attention
    exports; ``(None, {})`` when there is no bag file."""
    try:
        path = find_bag(bags_dir, slide_id)
    except (ValueError, OSError):
        return None, {}
    return os.fspath(path), read_bag_attrs(path)


def _label(row: pd.Series) -> int | float:
    value = row.get("label")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0  # survival manifests may omit label; Bag.label is unused there
    value = float(value)
    return int(value) if value.is_integer() else value


def _optional(row: pd.Series, col: str, cast):
    value = row.get(col)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return cast(value)


def load_cohort(
    manifest: pd.DataFrame,
    bags_dir: str | os.PathLike,
    *,
    half: bool | str = False,
    stream: bool | None = False,
) -> dict[str, Bag]:
    """Load one :class:`Bag` per manifest row (features (N, D) torch tensors).

    Every manifest id without a bag is reported in one :class:`BagError`; bags without a
    manifest row are logged as a warning. ``half=True`` keeps features as float16 in memory
    (half the RAM); convert per step with :func:`bag_to_float32`; ``half="auto"`` keeps them
    float16 only where the file stores float16 (no precision lost). ``stream=True`` leaves the
    features of HDF5 bags on disk (:mod:`histomil.bags.stream`); ``stream=None`` streams only
    when the cohort's features exceed :func:`~histomil.bags.stream.memory_budget`.
    """
    from histomil.bags import stream as st

    if "slide_id" not in manifest.columns:
        raise BagError("manifest has no slide_id column")
    ids = manifest["slide_id"].astype(str)
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise BagError(f"manifest has duplicate slide_id(s): {', '.join(dup[:20])}")
    index = index_bags(bags_dir)
    missing = _missing_message(ids, index, bags_dir)
    if missing:
        raise BagError(missing)
    check_one_encoder({sid: index[sid] for sid in ids})
    extra = sorted(set(index) - set(ids))
    if extra:
        log.warning(
            "%d bag(s) under %s have no manifest row and are ignored: %s",
            len(extra),
            bags_dir,
            ", ".join(extra[:20]),
        )
    if stream is None:
        need = sum(st.feature_nbytes(index[sid]) for sid in ids)
        stream = need > st.memory_budget()
        if stream:
            log.info("cohort features (%.1f GB) exceed the memory budget: streaming", need / 2**30)
    cohort: dict[str, Bag] = {}
    problems: list[str] = []
    for (_, row), sid in zip(manifest.iterrows(), ids, strict=True):
        try:
            cohort[sid] = _one_bag(row, sid, index[sid], half, stream)
        except BagError as exc:
            problems.append(str(exc))
    problems += _dimension_problems(
        {s: (index[s], b.features.shape[-1]) for s, b in cohort.items()}
    )
    if problems:
        raise BagError(f"{len(problems)} bag problem(s): " + " | ".join(problems))
    return cohort


def _one_bag(row: pd.Series, sid: str, path: Path, half: bool | str, stream: bool) -> Bag:
    """One manifest row's bag (lazy when streaming an HDF5 file); BagError names the file."""
    import torch

    from histomil.bags import stream as st

    fields = {
        "slide_id": sid,
        "label": _label(row),
        "time": _optional(row, "time", float),
        "event": _optional(row, "event", lambda v: int(float(v))),
        "case_id": _optional(row, "case_id", str),
    }
    if stream and path.suffix in _H5:
        return st.lazy_bag(path, **fields)
    keep16 = half is True or (half == "auto" and st.stored_dtype(path) == "float16")
    dtype = torch.float16 if keep16 else torch.float32
    data = load_bag(path)

    def tensor(arr):
        return None if arr is None else torch.from_numpy(arr)

    return Bag(
        features=torch.from_numpy(data.features).to(dtype),
        coords=tensor(data.coords),
        patch_labels=tensor(data.patch_labels),
        overlap=tensor(data.overlap),
        attn_target=tensor(data.attn_target),
        **fields,
    )


def _missing_message(ids, index: dict[str, Path], bags_dir) -> str | None:
    missing = [sid for sid in ids if sid not in index]
    if not missing:
        return None
    more = f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""
    return (
        f"{len(missing)} manifest slide(s) have no bag under {bags_dir}: "
        f"{', '.join(missing[:20])}{more}; run `histomil extract` or fix the manifest"
    )


def _dimension_problems(dims: dict[str, tuple[Path, int]]) -> list[str]:
    """One problem naming the files of each minority feature dimension (none if all agree)."""
    by_dim: dict[int, list[Path]] = {}
    for path, d in dims.values():
        by_dim.setdefault(int(d), []).append(path)
    if len(by_dim) <= 1:
        return []
    parts = [
        f"{d}-d: {', '.join(str(p) for p in sorted(paths)[:5])}"
        + (f" (+{len(paths) - 5} more)" if len(paths) > 5 else "")
        for d, paths in sorted(by_dim.items(), key=lambda kv: -len(kv[1]))
    ]
    return [
        "bags have different feature dimensions (features from different encoders?): "
        + "; ".join(parts)
    ]


def check_bags(
    manifest: pd.DataFrame, bags_dir: str | os.PathLike
) -> tuple[dict[str, Path], list[str]]:
    """Every problem of the cohort's bags at once, before anything is trained.

    Returns ``(slide id -> bag file, problems)``: missing bags, unreadable files, empty bags,
    NaN/Inf features, bad shapes (each naming its file) and differing feature dimensions. Each
    bag is read once (one at a time, so memory stays at one bag).
    """
    ids = manifest["slide_id"].astype(str)
    try:
        index = index_bags(bags_dir)
    except BagError as exc:
        return {}, [str(exc)]
    problems: list[str] = []
    missing = _missing_message(ids, index, bags_dir)
    if missing:
        problems.append(missing)
    dims: dict[str, tuple[Path, int]] = {}
    for sid in ids:
        if sid not in index:
            continue
        try:
            dims[sid] = (index[sid], load_bag(index[sid]).feature_dim)
        except BagError as exc:
            problems.append(str(exc))
    problems += _dimension_problems(dims)
    return {sid: index[sid] for sid in ids if sid in index}, problems


def bag_to_float32(bag: Bag) -> Bag:
    """Return ``bag`` with float32 features (a no-op copy-free return when already float32)."""
    import torch

    if bag.features.dtype == torch.float32:
        return bag
    return replace(bag, features=bag.features.float())
