"""The manifest CSV that ties slides, labels, annotations, splits and bags together.

Columns: ``slide_id`` and ``label`` (required for training; ``label`` may be omitted by
preprocessing-only callers), optional ``case_id`` (patient grouping), ``slide_path``,
``annotation_path``, ``split`` (train/val/test), ``mpp`` (level-0 um/px override), and for
survival ``time`` and ``event``. Problems are reported, never silently dropped.

Ids (``slide_id``, ``case_id``) are kept exactly as written (``00008``, ``1.110``, ``NA`` are
ids, not numbers or missing values; :func:`histomil._io.read_csv`). Numeric columns (``mpp``,
``time``, ``event``) must hold plain numbers: a decimal comma (``0,5``) is an error naming the
file, line and column rather than a guess (``1,250`` could be 1.25 or 1250).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from histomil._io import read_csv

KNOWN_COLUMNS = (
    "slide_id", "label", "case_id", "slide_path", "annotation_path", "split", "mpp", "time",
    "event",
)  # fmt: skip
SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest that cannot be used as it is; the message names the file and the problem."""


def read_manifest(
    path: str | os.PathLike, required: Sequence[str] = ("slide_id", "label")
) -> pd.DataFrame:
    """Read and validate a manifest; relative ``slide_path``/``annotation_path`` are resolved
    against the manifest's folder. Raises :class:`ManifestError` with every problem found."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    try:
        df = read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path}: cannot be parsed as CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    for col in ("slide_id", "case_id"):
        if col in df.columns:  # ids stay text; an empty cell is a missing id, not ""
            df[col] = df[col].astype(object).where(df[col].astype(str).str.strip() != "", None)
    problems = validate_manifest(df, required)
    problems += _numeric_problems(df, required)
    if problems:
        raise ManifestError(f"manifest {path}: " + "; ".join(problems))
    for col in ("slide_path", "annotation_path"):
        if col in df.columns:
            df[col] = [_resolve(path.parent, v) for v in df[col]]
    if "split" in df.columns:
        df["split"] = df["split"].fillna("").astype(str).str.strip().str.lower()
    return df.reset_index(drop=True)


def validate_manifest(
    df: pd.DataFrame, required: Sequence[str] = ("slide_id", "label")
) -> list[str]:
    """Return human-readable problems (empty when the manifest is usable)."""
    problems: list[str] = []
    missing = [c for c in required if c not in df.columns]
    if missing:
        problems.append(
            f"missing required column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))})"
        )
        return problems
    if len(df) == 0:
        problems.append("no rows")
        return problems
    if "slide_id" in df.columns:
        ids = df["slide_id"]
        if ids.isna().any():
            rows = [int(i) + 2 for i in df.index[ids.isna()]]
            problems.append(f"empty slide_id on line(s) {rows[:10]}")
        dup = ids[ids.duplicated(keep=False) & ids.notna()]
        if len(dup):
            problems.append(f"duplicate slide_id(s): {', '.join(sorted(set(dup))[:10])}")
    if "label" in required and "label" in df.columns and df["label"].isna().any():
        rows = [str(df.loc[i, "slide_id"]) for i in df.index[df["label"].isna()]]
        problems.append(f"missing label for slide(s): {', '.join(rows[:10])}")
    if "split" in df.columns:
        bad = set(df["split"].dropna().astype(str).str.strip().str.lower()) - set(SPLITS) - {""}
        if bad:
            problems.append(f"unknown split value(s) {sorted(bad)}; use {', '.join(SPLITS)}")
    for col in ("time", "event"):
        if col in required and col in df.columns and df[col].isna().any():
            problems.append(f"missing {col} values")
    return problems


def _numeric_problems(df: pd.DataFrame, required: Sequence[str]) -> list[str]:
    """Parse ``mpp``/``time``/``event`` as numbers in place; report cells that are not."""
    problems = []
    for col in ("mpp", "time", "event"):
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
        if bad.any():
            cells = [f"line {int(i) + 2}: {df.at[i, col]!r}" for i in df.index[bad]][:10]
            comma = any("," in str(df.at[i, col]) for i in df.index[bad])
            hint = " (use a decimal point, not a comma)" if comma else ""
            problems.append(f"column {col} must hold numbers{hint}: {', '.join(cells)}")
        elif col == "mpp" and (values <= 0).any():
            cells = [f"line {int(i) + 2}: {df.at[i, col]!r}" for i in df.index[values <= 0]][:10]
            problems.append(f"column mpp must be > 0 (um/px): {', '.join(cells)}")
        else:
            df[col] = values
    return problems


def _resolve(base: Path, value) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return None
    p = Path(str(value))
    return str(p if p.is_absolute() else (base / p).resolve())
