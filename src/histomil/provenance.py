"""Provenance: what determined an output, and whether a finished output is still valid.

Every step (preprocess, label, extract, train folds, experiment points, demo) records with its
outputs a :func:`record`: the step name, the parameters that determine the outputs, and the
identity of every input file it read (:func:`file_identity`: size and a content hash, so a moved
or copied folder stays valid but an edited or replaced file does not). :func:`decide` is the one
place that turns "an output exists" into skip / compute / refuse:

- no output yet -> ``"compute"``;
- output whose recorded provenance equals the wanted one -> ``"skip"``;
- otherwise -> ``"compute"`` when ``overwrite`` is set, else :class:`StaleOutputError` whose
  message names every difference (``old -> new``) and how to proceed.

Outputs written before provenance was recorded count as different (their inputs are unknown).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

#: Attribute name under which HDF5 outputs (patch files, bag files) store their provenance.
H5_ATTR = "histomil_provenance"
#: Files up to this size are hashed whole; larger ones (slides, big checkpoints) by head + tail.
FULL_HASH_LIMIT = 64 * 1024 * 1024
_CHUNK = 1024 * 1024

Decision = Literal["skip", "compute"]


class StaleOutputError(RuntimeError):
    """A finished output was made from other inputs or parameters than the ones asked for now."""


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of an input file: name, size and a SHA-256 of its content.

    Files larger than :data:`FULL_HASH_LIMIT` are hashed over their size plus the first and
    last MiB (``hash: "sha256-head-tail"``): whole-slide images are gigabytes, and any rewrite
    of one changes its size or its header/trailer (TIFF directories, JPEG tables).
    """
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        if size <= FULL_HASH_LIMIT:
            kind = "sha256"
            for block in iter(lambda: fh.read(_CHUNK), b""):
                h.update(block)
        else:
            kind = "sha256-head-tail"
            h.update(str(size).encode())
            h.update(fh.read(_CHUNK))
            fh.seek(size - _CHUNK)
            h.update(fh.read(_CHUNK))
    return {"name": p.name, "size": size, kind: h.hexdigest()}


def record(
    step: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> dict[str, Any]:
    """The provenance of one output: step, parameters (JSON-able) and input file identities.

    ``inputs`` maps a role (``"slide"``, ``"patch_file"``, ``"annotation"``, ``"weights"``) to
    a path; ``None`` records that the role had no file (e.g. a slide without annotation).
    """
    files = {
        role: (None if path is None else file_identity(path))
        for role, path in sorted((inputs or {}).items())
    }
    return normalise({"step": step, "params": dict(params), "inputs": files})


def effective_params(
    factory: Any, given: Mapping[str, Any], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``given`` plus every keyword of ``factory``'s signature it leaves out, at its default.

    Recorded beside the given settings so that a default changed by a later histomil changes
    the record (a run resumed across that change is refused instead of mixing folds made with
    two settings). Required and ``*args``/``**kwargs`` parameters and ``skip`` are left out.
    """
    import inspect

    out = dict(given)
    for name, param in inspect.signature(factory).parameters.items():
        if name in skip or name == "self" or name in out:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.default is param.empty:
            continue
        out[name] = param.default
    return normalise(out)


def normalise(obj: Any) -> Any:
    """JSON round trip, so tuples/paths/numpy scalars compare equal to what was read back."""
    from histomil._io import _json_default

    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def differences(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences ``key: old -> new`` between two provenance records."""
    if old is None:
        return ["the existing output records no provenance (made by an older histomil)"]
    out: list[str] = []
    _diff(normalise(old), normalise(new), "", out)
    return out


def _diff(old: Any, new: Any, prefix: str, out: list[str]) -> None:
    if _is_identity(old) or _is_identity(new):  # one line per changed file, not per hash field
        if old != new:
            out.append(f"{prefix}: {_short(old)} -> {_short(new)}")
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: (not recorded) -> {_short(new[key])}")
            elif key not in new:
                out.append(f"{name}: {_short(old[key])} -> (not set)")
            else:
                _diff(old[key], new[key], name, out)
    elif old != new:
        out.append(f"{prefix}: {_short(old)} -> {_short(new)}")


def _is_identity(value: Any) -> bool:
    return isinstance(value, dict) and "size" in value and "name" in value


def _short(value: Any) -> str:
    if _is_identity(value):
        digest = value.get("sha256") or value.get("sha256-head-tail") or ""
        return f"{value.get('name')} ({value['size']} bytes, {digest[:12]})"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def decide(
    output: str | os.PathLike,
    recorded: Mapping[str, Any] | None,
    wanted: Mapping[str, Any],
    overwrite: bool = False,
    how: str = "pass --overwrite to recompute it, or use another --out",
) -> Decision:
    """Skip, compute or refuse one output (see the module docstring).

    ``recorded`` is what the existing output holds (``None`` when it has none); it is ignored
    when ``output`` does not exist. Raises :class:`StaleOutputError` naming what changed.
    """
    if not Path(output).exists():
        return "compute"
    changes = differences(recorded, wanted)
    if not changes:
        return "skip"
    if overwrite:
        return "compute"
    raise StaleOutputError(
        f"{output} was made with other inputs or settings ({'; '.join(changes)}); {how}"
    )


def refuse(problems: list[str], outputs: str) -> None:
    """Raise one :class:`StaleOutputError` for every refused output of a batch (a line each),
    after all of them were decided and before anything is written; nothing when none."""
    if problems:
        raise StaleOutputError(
            f"{outputs} made from other inputs or settings; nothing was written:\n"
            + "\n".join(problems)
        )


def read_h5(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance stored in an HDF5 output, or ``None`` when it has none."""
    import h5py

    with h5py.File(path, "r") as h5:
        raw = h5.attrs.get(H5_ATTR)
    if raw is None:
        return None
    return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))


def write_h5(h5: Any, prov: Mapping[str, Any]) -> None:
    """Store ``prov`` on an open, writable ``h5py.File`` (as one JSON string attribute)."""
    h5.attrs[H5_ATTR] = json.dumps(normalise(prov), sort_keys=True)


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance stored in a JSON sidecar, or ``None`` when the file does not exist."""
    p = Path(path)
    if not p.is_file():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def write_json(path: str | os.PathLike, prov: Mapping[str, Any]) -> None:
    """Write ``prov`` atomically as a JSON sidecar."""
    from histomil._io import atomic_write_json

    atomic_write_json(path, normalise(prov))
