"""Everything a run checks before any fold starts, and what it records about its inputs.

:func:`training_manifest` reads the manifest and maps labels to class indices
(:mod:`histomil.training.labels`); :func:`validate_cohort` adds the bag checks (every bag found
and readable, non-empty, finite, one feature dimension) and the split checks, and raises one
:class:`CohortError` listing every problem with file names. Nothing is written before it passes.

:func:`run_provenance` is the run's :func:`histomil.provenance.record`: the resolved config,
the splits (hash of every fold's slide ids), the manifest and every bag file, and for a baseline
taken from another run (``objective.baseline``) each fold's checkpoint. ``folds/<k>/split.json`` holds the exact
train/val/test slide ids of a fold (:func:`write_split`); anything that reuses a fold (resume,
a baseline, an experiment point) compares it with :func:`split_leaks`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from histomil import provenance
from histomil.manifest import read_manifest
from histomil.training.config import TrainConfig, config_to_dict
from histomil.training.labels import map_labels
from histomil.training.splits import FoldSplit, make_splits

SPLIT_FILE = "split.json"


class CohortError(ValueError):
    """The run's inputs cannot be trained on; the message lists every problem found."""


class SplitMismatchError(ValueError):
    """A reused fold (resume, baseline, experiment point) had other train/val/test slides."""


@dataclass(frozen=True)
class Cohort:
    """The validated inputs of a run: manifest (integer labels), classes, bags, folds."""

    manifest: pd.DataFrame
    n_classes: int  # classes (classification) or 0 (survival)
    bag_paths: dict[str, Path]
    splits: list[FoldSplit]


def required_columns(config: TrainConfig) -> tuple[str, ...]:
    if config.task == "survival":
        return ("slide_id", "time", "event")
    return ("slide_id", "label")


def training_manifest(config: TrainConfig) -> tuple[pd.DataFrame, int, list[str]]:
    """``(manifest with integer labels, n_classes, label problems)``.

    Raises :class:`~histomil.manifest.ManifestError` for an unreadable manifest.
    """
    df = read_manifest(config.data.manifest, required=required_columns(config))
    if config.task == "survival":
        return df, 0, []
    return map_labels(df, config.data.manifest, config.data.labels, config.data.n_classes)


def n_outputs(config: TrainConfig, n_classes: int) -> int:
    """Logits of the model: bins (survival), 1 (binary) or the number of classes."""
    if config.task == "survival":
        return config.train.survival_bins
    return 1 if n_classes <= 2 else n_classes


def validate_cohort(config: TrainConfig) -> Cohort:
    """Every cohort-level check at once; raises :class:`CohortError` naming each problem."""
    df, n_classes, problems = training_manifest(config)
    paths, bag_problems = _checked_bags(df, config.data.bags)
    problems += bag_problems
    splits: list[FoldSplit] = []
    try:
        splits = make_splits(df, config.split, config.train.seed, config.task)
    except ValueError as exc:
        problems.append(f"split: {exc}")
    problems += _split_problems(df, splits, config)
    if problems:
        raise CohortError(
            f"{len(problems)} problem(s) with the inputs of this run (nothing was written): "
            + " | ".join(problems)
        )
    return Cohort(df, n_classes, paths, splits)


_BAG_CHECKS: dict[tuple, tuple[dict[str, Path], list[str]]] = {}


def _checked_bags(df: pd.DataFrame, bags_dir: str) -> tuple[dict[str, Path], list[str]]:
    """:func:`histomil.bags.dataset.check_bags`, memoised on the files' (size, mtime, inode):
    a sweep validates every point, but reads each unchanged bag once per process."""
    from histomil.bags.dataset import check_bags, index_bags

    try:
        index = index_bags(bags_dir)
    except Exception:  # reported by check_bags itself
        return check_bags(df, bags_dir)
    key_parts = []
    for sid in df["slide_id"].astype(str):
        path = index.get(sid)
        st = None if path is None else path.stat()
        key_parts.append(
            (sid, None if st is None else (str(path), st.st_size, st.st_mtime_ns, st.st_ino))
        )
    key = (str(bags_dir), tuple(key_parts))
    if key not in _BAG_CHECKS:
        _BAG_CHECKS.clear()  # one cohort at a time is enough; keeps memory bounded
        _BAG_CHECKS[key] = check_bags(df, bags_dir)
    paths, problems = _BAG_CHECKS[key]
    return dict(paths), list(problems)


def _split_problems(df: pd.DataFrame, splits: list[FoldSplit], config: TrainConfig) -> list[str]:
    """Folds that cannot be trained or evaluated: empty train/validation, one-class training."""
    out = []
    label = (
        None if config.task == "survival" else dict(zip(df["slide_id"], df["label"], strict=True))
    )
    for s in splits:
        leak = (set(s.train) | set(s.val)) & set(s.test)
        if leak or set(s.train) & set(s.val):
            out.append(f"fold {s.fold}: a slide is in two of train/val/test")
        if not s.train or not s.val:
            out.append(f"fold {s.fold}: empty {'training' if not s.train else 'validation'} set")
        elif label is not None and len({label[i] for i in s.train}) < 2:
            out.append(f"fold {s.fold}: the training set holds one class only")
    return out


# -- split records ---------------------------------------------------------------------------
def split_record(split: FoldSplit) -> dict[str, Any]:
    ids = {"train": sorted(split.train), "val": sorted(split.val), "test": sorted(split.test)}
    digest = hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()
    return {"fold": split.fold, "sha256": digest, **ids}


def write_split(fold_dir: str | os.PathLike, split: FoldSplit) -> None:
    from histomil._io import atomic_write_json

    atomic_write_json(Path(fold_dir) / SPLIT_FILE, split_record(split))


def read_split(fold_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(fold_dir) / SPLIT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def split_leaks(reused: dict[str, Any] | None, split: FoldSplit, what: str) -> str | None:
    """Why the fold recorded in ``reused`` cannot stand in for ``split``, or None if identical.

    The message names the slides of this fold's test (and validation) set that the reused
    fold trained or selected on.
    """
    if reused is None:
        return (
            f"{what} records no split ({SPLIT_FILE}; made by an older histomil or outside a "
            "run), so it cannot be shown to have never seen this fold's test slides"
        )
    want = split_record(split)
    if all(reused.get(k) == want[k] for k in ("train", "val", "test")):
        return None  # the id lists themselves, not the stored hash, are compared
    seen = set(reused.get("train", [])) | set(reused.get("val", []))
    test_leak = sorted(seen & set(split.test))
    val_leak = sorted(set(reused.get("train", [])) & set(split.val))
    parts = []
    if test_leak:
        parts.append(f"test slide(s) it trained or selected on: {_ids(test_leak)}")
    if val_leak:
        parts.append(f"validation slide(s) it trained on: {_ids(val_leak)}")
    detail = "; ".join(parts) or "same slides are not leaked but the sets differ"
    return f"{what} was trained on other splits than fold {split.fold} ({detail})"


def _ids(ids: list[str]) -> str:
    return ", ".join(ids[:20]) + (f" (+{len(ids) - 20} more)" if len(ids) > 20 else "")


# -- provenance ------------------------------------------------------------------------------
_IDENTITY_CACHE: dict[tuple, dict[str, Any]] = {}


def cached_identity(path: str | os.PathLike, content: bool = False) -> dict[str, Any]:
    """:func:`histomil.provenance.file_identity` (or :func:`h5_content_identity` when
    ``content``), memoised on (path, size, mtime, inode) so a sweep of many points over one
    cohort hashes each bag once per process."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ino, content)
    if key not in _IDENTITY_CACHE:
        is_h5 = Path(path).suffix in (".h5", ".hdf5")
        ident = h5_content_identity if content and is_h5 else provenance.file_identity
        _IDENTITY_CACHE[key] = ident(path)
    return _IDENTITY_CACHE[key]


def h5_content_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of an HDF5 bag by what it holds: SHA-256 over every dataset (name, dtype,
    shape, values) and every attribute. Hand-written because HDF5 files rewritten with the same
    content differ in bytes (object timestamps), e.g. after a rerun of ``histomil label``."""
    import h5py
    import numpy as np

    h = hashlib.sha256()

    def attrs(obj) -> None:
        for k in sorted(obj.attrs):
            h.update(f"@{k}={np.asarray(obj.attrs[k]).tolist()!r}".encode())

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            data = np.ascontiguousarray(obj[()])
            h.update(f"{name}|{data.dtype.str}|{data.shape}".encode())
            h.update(data.tobytes())
        attrs(obj)

    with h5py.File(path, "r") as f:
        attrs(f)
        f.visititems(visit)
    return {"name": Path(path).name, "content-sha256": h.hexdigest()}


def baseline_checkpoints(config: TrainConfig, splits: list[FoldSplit]) -> dict[int, Path] | None:
    """Per fold, the baseline checkpoint ``objective.baseline`` names (None: unset or
    ``auto``, the run trains its own baseline if its objective needs one)."""
    given = config.objective.baseline
    if not given or given == "auto":
        return None
    path = Path(given)
    if path.is_dir():
        return {s.fold: path / "folds" / str(s.fold) / "checkpoint.pt" for s in splits}
    return {s.fold: path for s in splits}


def resolved_settings(config: TrainConfig) -> dict[str, Any]:
    """The model's and the objective's settings with their defaults filled in: the config
    records only the given ones, so without this a changed default would go unnoticed when a
    run is resumed (its old folds made with the old default, the new ones with the new)."""
    from histomil import models
    from histomil.objectives import registry

    model = provenance.effective_params(
        models.model_class(config.model.name), config.model.params, skip=("in_dim", "n_classes")
    )
    cls = registry.objective_class(config.objective.name)
    objective = cls.resolved_params(config.objective.params)
    return {"model": model, "objective": objective}


def run_provenance(config: TrainConfig, cohort: Cohort) -> dict[str, Any]:
    """The provenance record of a training run (see the module docstring)."""
    record = provenance.record(
        "train",
        {
            "config": config_to_dict(config),
            "resolved": resolved_settings(config),
            "splits": {str(s.fold): split_record(s)["sha256"] for s in cohort.splits},
        },
    )
    inputs: dict[str, Any] = {"manifest": cached_identity(config.data.manifest)}
    for sid, path in sorted(cohort.bag_paths.items()):
        inputs[f"bag {sid}"] = cached_identity(path, content=True)
    for fold, ckpt in sorted((baseline_checkpoints(config, cohort.splits) or {}).items()):
        inputs[f"baseline fold {fold}"] = cached_identity(ckpt) if ckpt.is_file() else None
    record["inputs"] = inputs
    return provenance.normalise(record)
