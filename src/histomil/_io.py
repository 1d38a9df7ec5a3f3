"""Small I/O helpers shared by every batch step: atomic writes and slide ids.

Every file a batch job produces is written to a temporary sibling and moved into place with
``os.replace`` so an interrupted run never leaves a half-written file that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide",
    ".jpg", ".jpeg", ".png",
)  # fmt: skip


def slide_id_from_path(path: str | os.PathLike) -> str:
    """Slide id = file name without its (possibly double, e.g. ``.ome.tif``) extension."""
    name = Path(path).name
    for double in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(double):
            return name[: -len(double)]
    return Path(name).stem


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; move it onto ``path`` on success.

    On an exception the temporary file is removed and the target is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should be shareable
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


#: Columns that hold identifiers: always read and written as strings, never parsed as numbers
#: or missing values (``00008``, ``1.110``, ``1e5`` and ``NA`` are valid slide ids).
ID_COLUMNS = ("slide_id", "case_id", "patient_id", "key")


def read_csv(path: str | os.PathLike, id_columns: tuple[str, ...] = ID_COLUMNS, **kw: Any):
    """``pandas.read_csv`` that keeps every id column as the exact string in the file.

    Other columns are parsed as usual (numbers, empty cells as missing). Every CSV the project
    reads goes through here, so an id is never turned into ``8.0`` or ``NaN`` on the way.
    """
    import pandas as pd

    header = pd.read_csv(path, nrows=0, **kw).columns
    ids = [c for c in header if str(c).strip() in id_columns]
    na = {c: _DEFAULT_NA for c in header if c not in ids}
    return pd.read_csv(
        path,
        dtype={c: str for c in ids},
        keep_default_na=False,
        na_values=na,
        **kw,
    )


def write_csv(df, path: str | os.PathLike) -> None:
    """Write a DataFrame atomically (no index); ids are written exactly as held (strings)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


_DEFAULT_NA = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip
