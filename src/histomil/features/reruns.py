"""What determines a bag file, and the skip / compute / refuse decision for every slide.

A bag records (:mod:`histomil.provenance`) the encoder, its weights (the checkpoint file's
identity, the random seed, or the cached file the encoder resolved), the stored dtype and
precision, and the identities of the patch file and the slide it read. A rerun whose patch
file, weights or settings changed is refused (or recomputed with ``overwrite``) instead of
keeping the old features; a patch file made from another version of its slide is reported too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histomil.provenance import (
    StaleOutputError,
    decide,
    differences,
    file_identity,
    normalise,
    read_h5,
    record,
    refuse,
)

#: How a refusal tells the user to proceed.
HOW = "pass --overwrite to re-extract it, or use another --out"


#: The status message of a patch file without patches (no bag is written).
EMPTY_MESSAGE = "no tissue patches (preprocess marked the slide empty); skipped"


def bag_path_for(out_dir: str | os.PathLike, slide_id: str, config=None) -> Path:  # noqa: ANN001
    """Where ``slide_id``'s features go for ``config.layout`` (``OUT/bags/<id>.h5`` by default)."""
    from histomil.bags.layouts import feature_path
    from histomil.features.encoders import canonical_name

    if config is None:
        return Path(out_dir) / "bags" / f"{slide_id}.h5"
    return feature_path(out_dir, slide_id, config.layout, canonical_name(config.encoder))


def weights_record(
    config,
    cached_weights: Callable[[], str],  # noqa: ANN001
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, input files) identifying the encoder weights of ``config`` (an ExtractConfig).

    A checkpoint file is an input (content hash); random weights are a seed; weights found in
    the local torch/timm caches are identified by the encoder itself (path + sha256), which
    ``cached_weights()`` builds (the extraction's encoder, so it is loaded only when needed).
    """
    w = config.weights
    if w.random:
        return {"weights": "random", "weights_seed": int(w.seed)}, {}
    if w.path is not None:
        return {"weights": "file"}, {"weights": Path(w.path)}
    return {"weights": cached_weights()}, {}


def bag_provenance(pf, config, weights: tuple[dict, dict]) -> dict[str, Any]:
    """The provenance of the bag made from patch file ``pf`` (a PatchFile) with ``config``."""
    params = {
        "encoder": config.encoder,
        "storage_dtype": config.storage_dtype,
        "precision": config.precision,
        **weights[0],
    }
    inputs = {"patch_file": pf.path, "slide": pf.slide_path, **weights[1]}
    return record("extract", params, inputs)


def stale_patch_file(pf) -> str | None:
    """Why ``pf`` no longer matches its slide (it was made from another version), or None."""
    made = read_h5(pf.path)
    old = (made or {}).get("inputs", {}).get("slide")
    if old is None:
        return None
    new = normalise(file_identity(pf.slide_path))
    if {k: v for k, v in old.items() if k != "name"} == {
        k: v for k, v in new.items() if k != "name"
    }:
        return None
    change = "; ".join(differences({"slide": old}, {"slide": new}))
    return (
        f"patch file {pf.path} was made from another version of slide {pf.slide_path} "
        f"({change}); rerun preprocess with --overwrite first"
    )


@dataclass
class Plan:
    """Per-slide decisions: ``todo`` (patch file, provenance or None: built by the task) to
    extract, rows of slides skipped or empty, and refusals."""

    todo: list[tuple[Path, dict | None]] = field(default_factory=list)
    rows: dict[str, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def raise_problems(self, out_dir: Path) -> None:
        refuse(
            self.problems, f"{len(self.problems)} slide(s) have bags in {out_dir} or patch files"
        )


def plan_extraction(
    files: list[Path],
    out_dir: Path,
    config,  # noqa: ANN001
    cached_weights: Callable[[], str],
) -> Plan:
    """Decide skip / compute / refuse for every patch file before anything is written.

    A slide without a bag yet is computed with the provenance its task builds (so the encoder
    weights are resolved by the task, as before); an unreadable patch file is left to its task,
    which reports the error.
    """
    from histomil.features.patches import PatchFileError, read_patch_file

    plan = Plan()
    weights: list[tuple[dict, dict]] = []  # resolved once, only when a bag must be compared
    for path in files:
        try:
            pf = read_patch_file(path, config.slides_dir)
        except (PatchFileError, OSError):
            plan.todo.append((path, None))
            continue
        bag = bag_path_for(out_dir, pf.slide_id, config)
        row = {"slide_id": pf.slide_id, "bag": str(bag), "n_patches": len(pf.coords)}
        if len(pf.coords) == 0:
            plan.rows[pf.slide_id] = {**row, "bag": "", "status": "empty", "error": EMPTY_MESSAGE}
            continue
        stale = stale_patch_file(pf)
        if stale is not None:
            plan.problems.append(stale)
            continue
        if not bag.is_file():
            plan.todo.append((path, None))
            continue
        if not weights:
            weights.append(weights_record(config, cached_weights))
        wanted = bag_provenance(pf, config, weights[0])
        try:
            decision = decide(bag, read_h5(bag), wanted, config.overwrite, how=HOW)
        except StaleOutputError as exc:
            plan.problems.append(str(exc))
            continue
        except OSError as exc:  # an unreadable bag: only --overwrite may replace it
            if not config.overwrite:
                plan.problems.append(f"{bag}: unreadable bag file ({exc}); {HOW}")
                continue
            decision = "compute"
        if decision == "skip":
            plan.rows[pf.slide_id] = {**row, "status": "skipped", "seconds": 0.0}
        else:
            plan.todo.append((path, wanted))
    return plan
