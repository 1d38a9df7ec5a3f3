"""Compare the outputs of two histomil output folders (a refactoring must not change them).

Usage::

    python scripts/compare_runs.py BASE NEW [--ignore KEY ...] [--include GLOB ...] [--root DIR ...]

Every file of BASE matching the globs (default: predictions/results/history CSVs, metrics,
per-fold result, split and summary JSONs, ``table.md`` and the attention ``.h5`` files) is
compared with the file at the same relative path in NEW:

- text files (CSV, Markdown) byte for byte after the absolute folder paths (BASE, NEW) are
  replaced by ``<ROOT>``;
- JSON files value for value (floats exactly) after the same path replacement, except keys
  given with ``--ignore`` (dotted paths from the top, e.g. ``config.objective.baseline``, or
  a bare key name ignored at any depth);
- HDF5 files dataset by dataset (name, dtype, shape, raw values) and attribute by attribute
  (paths replaced).

Prints one line per differing or missing file (with the first difference) and a summary;
exits 1 when anything differs. Timestamps are not part of these files (provenance.json and
config.yaml, which hold absolute paths and file identities, are not compared by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_GLOBS = (
    "**/predictions.csv",
    "**/results.csv",
    "**/history.csv",
    "**/metrics.json",
    "**/result.json",
    "**/split.json",
    "**/summary.json",
    "**/table.md",
    "**/attention/**/*.h5",
)


def _norm_text(text: str, roots: tuple[str, ...]) -> str:
    for root in roots:
        text = text.replace(root, "<ROOT>")
    return text


def _norm(value: Any, roots: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _norm_text(value, roots)
    if isinstance(value, dict):
        return {k: _norm(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v, roots) for v in value]
    return value


def _json_diff(a: Any, b: Any, path: str, ignore: set[str], out: list[str]) -> None:
    key = path.rsplit(".", 1)[-1]
    if path in ignore or key in ignore:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                if sub not in ignore and str(k) not in ignore:
                    out.append(f"{sub}: {'missing' if k not in a else a[k]!r} -> "
                               f"{'missing' if k not in b else b[k]!r}")  # fmt: skip
                continue
            _json_diff(a[k], b[k], sub, ignore, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _json_diff(x, y, f"{path}[{i}]", ignore, out)
    elif type(a) is not type(b) or a != b:
        if not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):  # NaN
            out.append(f"{path}: {a!r} -> {b!r}")


def _compare_text(a: Path, b: Path, roots: tuple[str, ...]) -> list[str]:
    ta = _norm_text(a.read_text(encoding="utf-8"), roots).splitlines()
    tb = _norm_text(b.read_text(encoding="utf-8"), roots).splitlines()
    for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if x != y:
            return [f"line {i + 1}: {x[:120]!r} -> {y[:120]!r}"]
    if len(ta) != len(tb):
        return [f"{len(ta)} -> {len(tb)} lines"]
    return []


def _compare_json(a: Path, b: Path, roots: tuple[str, ...], ignore: set[str]) -> list[str]:
    out: list[str] = []
    ja = _norm(json.loads(a.read_text(encoding="utf-8")), roots)
    jb = _norm(json.loads(b.read_text(encoding="utf-8")), roots)
    _json_diff(ja, jb, "", ignore, out)
    return out


def _attr(value: Any, roots: tuple[str, ...]) -> Any:
    import numpy as np

    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    return _norm(value, roots)


def _compare_h5(a: Path, b: Path, roots: tuple[str, ...], ignore: set[str]) -> list[str]:
    import h5py
    import numpy as np

    out: list[str] = []

    def items(f: h5py.File) -> dict[str, Any]:
        found: dict[str, Any] = {"/": f}
        f.visititems(lambda name, obj: found.__setitem__(name, obj))
        return found

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ia, ib = items(fa), items(fb)
        for name in sorted(set(ia) | set(ib)):
            if name not in ia or name not in ib:
                out.append(f"{name}: {'missing' if name not in ia else 'present'} -> "
                           f"{'missing' if name not in ib else 'present'}")  # fmt: skip
                continue
            oa, ob = ia[name], ib[name]
            if isinstance(oa, h5py.Dataset):
                da, db = np.asarray(oa[()]), np.asarray(ob[()])
                if da.dtype != db.dtype or da.shape != db.shape:
                    out.append(f"{name}: {da.dtype}{da.shape} -> {db.dtype}{db.shape}")
                elif da.tobytes() != db.tobytes():
                    out.append(f"{name}: values differ")
            attrs_a = {k: _attr(v, roots) for k, v in oa.attrs.items()}
            attrs_b = {k: _attr(v, roots) for k, v in ob.attrs.items()}
            _json_diff(attrs_a, attrs_b, f"{name}@", ignore, out)
    return out


def compare(
    base: Path,
    new: Path,
    ignore: set[str],
    globs: tuple[str, ...] = DEFAULT_GLOBS,
    roots: tuple[str, ...] = (),
) -> tuple[int, list[str]]:
    """(number of files compared, one line per problem); ``roots``: absolute folders replaced by
    ``<ROOT>`` (default: ``base`` and ``new``)."""
    roots = roots or (str(base.resolve()), str(new.resolve()))
    files = sorted({p for g in globs for p in base.glob(g) if p.is_file()})
    problems: list[str] = []
    for fa in files:
        rel = fa.relative_to(base)
        fb = new / rel
        if not fb.is_file():
            problems.append(f"{rel}: missing in {new}")
            continue
        if fa.suffix in (".h5", ".hdf5"):
            diffs = _compare_h5(fa, fb, roots, ignore)
        elif fa.suffix == ".json":
            diffs = _compare_json(fa, fb, roots, ignore)
        else:
            diffs = _compare_text(fa, fb, roots)
        if diffs:
            more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
            problems.append(f"{rel}: {'; '.join(diffs[:3])}{more}")
    extra = sorted(
        str(p.relative_to(new))
        for g in globs
        for p in new.glob(g)
        if p.is_file() and not (base / p.relative_to(new)).is_file()
    )
    problems += [f"{rel}: only in {new}" for rel in extra]
    return len(files), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--ignore", action="append", default=[], help="JSON key to ignore")
    parser.add_argument("--include", action="append", default=[], help="glob (replaces default)")
    parser.add_argument(
        "--root",
        action="append",
        default=[],
        help="absolute folder written into the outputs, replaced by <ROOT> (default: BASE, NEW;"
        " give the top folders when comparing subfolders)",
    )
    args = parser.parse_args(argv)
    for folder in (args.base, args.new):
        if not folder.is_dir():
            print(f"error: {folder} is not a folder", file=sys.stderr)
            return 2
    globs = tuple(args.include) or DEFAULT_GLOBS
    roots = tuple(str(Path(r).resolve()) for r in args.root)
    n, problems = compare(args.base, args.new, set(args.ignore), globs, roots)
    for line in problems:
        print(f"DIFF {line}")
    print(f"{n} file(s) compared, {len(problems)} difference(s)")
    return 1 if problems or n == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
