"""CLAM's split files: ``splits_<k>.csv`` with ``train``, ``val``, ``test`` columns of slide ids.

CLAM (``create_splits_seq.py`` -> ``save_splits``) writes one file per fold with the three
columns side by side, shorter columns padded with empty cells and a leading unnamed index column;
``Generic_WSI_Classification_Dataset.return_splits`` reads them with the slide ids kept as
strings and drops the empty cells. We read both that form and the index-free one, and write
CLAM's form, so folds are the same slides as a CLAM run's, fold for fold.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldSplit:
    """Slide ids of one fold (train, validation, test); defined here, with the file format,
    so that ``splits`` (which reads split files) and this module do not import each other."""

    fold: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


COLUMNS = ("train", "val", "test")
_NAME = re.compile(r"splits_(\d+)\.csv")


class SplitFileError(ValueError):
    """A split folder or file that cannot define folds; the message names the file."""


def split_files(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(k, path)`` of every ``splits_<k>.csv`` in ``folder``, by k (CLAM's
    ``splits_<k>_bool.csv``/``_descriptor.csv`` companions are not split files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SplitFileError(f"split folder {folder} does not exist")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)))
    if not found:
        raise SplitFileError(f"no splits_<k>.csv files in {folder}")
    ks = [k for k, _ in found]
    if ks != list(range(len(ks))):
        raise SplitFileError(
            f"{folder}: split files must be splits_0.csv .. splits_{len(ks) - 1}"
            f".csv without gaps, found k = {ks}"
        )
    return found


def read_split_file(path: str | os.PathLike, fold: int) -> FoldSplit:
    """One fold from a CLAM split file (ids as strings, empty padding cells dropped)."""
    from histomil._io import read_csv

    path = Path(path)
    df = read_csv(path, id_columns=COLUMNS)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SplitFileError(
            f"{path}: no {', '.join(missing)} column(s) (found {', '.join(map(str, df.columns))});"
            " expected CLAM's train,val,test columns of slide ids"
        )
    parts = {}
    for col in COLUMNS:
        ids = [str(v).strip() for v in df[col].tolist() if str(v).strip() not in ("", "nan")]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise SplitFileError(f"{path}: slide id(s) repeated in {col}: {', '.join(dup[:10])}")
        parts[col] = tuple(sorted(ids))
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = sorted(set(parts[a]) & set(parts[b]))
        if both:
            raise SplitFileError(f"{path}: slide(s) in both {a} and {b}: {', '.join(both[:10])}")
    return FoldSplit(fold, parts["train"], parts["val"], parts["test"])


def read_split_folder(folder: str | os.PathLike, manifest: pd.DataFrame) -> list[FoldSplit]:
    """Every fold of ``folder`` checked against the manifest: ids not in the manifest are an
    error; manifest slides in no column of a fold are left out of it (logged), as CLAM does."""
    known = set(manifest["slide_id"].astype(str))
    folds = []
    for k, path in split_files(folder):
        fold = read_split_file(path, k)
        used = set(fold.train) | set(fold.val) | set(fold.test)
        unknown = sorted(used - known)
        if unknown:
            raise SplitFileError(
                f"{path}: {len(unknown)} slide id(s) not in the manifest: {', '.join(unknown[:10])}"
            )
        if not fold.train:
            raise SplitFileError(f"{path}: the train column is empty")
        left = len(known - used)
        if left:
            log.info("split file %s leaves %d manifest slide(s) out of fold %d", path, left, k)
        folds.append(fold)
    return folds


def write_split_files(folds: list[FoldSplit], folder: str | os.PathLike) -> list[Path]:
    """Write ``splits_<fold>.csv`` per fold in CLAM's form (columns padded, index column)."""
    from histomil._io import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fold in folds:
        df = pd.concat(
            [pd.Series(list(getattr(fold, c)), name=c, dtype=object) for c in COLUMNS], axis=1
        )
        path = folder / f"splits_{fold.fold}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp)  # CLAM's save_splits keeps the index column
        paths.append(path)
    return paths
