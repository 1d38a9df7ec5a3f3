"""What determines a slide's labels, and the skip / compute / refuse decision for its outputs.

A labelled file (the labelled copy of a patch file or bag, or the input itself in the deprecated
in-place mode) records under :data:`LABEL_ATTR` the label settings, the slide label, the
preprocessing record of the patch grid, and the identities of the annotation file, the tissue
polygons and (with an output folder) the patch file and bag file it was made from. The
preprocessing record stays in the file's own :data:`~histomil.provenance.H5_ATTR`, so a labelled
copy still says how its grid was cut.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py

from histomil.provenance import (
    StaleOutputError,
    decide,
    file_identity,
    normalise,
    read_h5,
    record,
)

#: HDF5 attribute holding the label provenance (the file's own H5_ATTR is the grid's).
LABEL_ATTR = "histomil_label_provenance"
HOW = "pass --overwrite to relabel it, or use another --out"


@dataclass(frozen=True)
class LabelPlan:
    """Which outputs of one slide to (re)write, and the provenance each will record."""

    record: dict[str, Any]
    bag_record: dict[str, Any] | None
    write_patch: bool
    write_bag: bool
    write_qupath: bool

    @property
    def anything(self) -> bool:
        return self.write_patch or self.write_bag or self.write_qupath


def label_provenance(job, config) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(record of the labelled patch file, record of the labelled bag or None) of ``job``."""
    params = {k: v for k, v in asdict(config).items() if k != "qupath"}
    params["slide_label"] = int(job.slide_label)
    params["patch_grid"] = read_h5(job.patch_file)
    inputs: dict[str, Any] = {  # a missing file is reported by the slide's task
        "annotation": _existing(job.annotation_path),
        "tissue": _existing(job.tissue_file),
    }
    if job.output_file is not None:  # in place, the patch file itself changes: not an input
        inputs["patch_file"] = job.patch_file
    patch = record("label", params, inputs)
    if job.bag_file is None:
        return patch, None
    bag_inputs = dict(inputs)
    if job.bag_output is not None:
        bag_inputs["bag_file"] = job.bag_file
    return patch, record("label", params, bag_inputs)


def _existing(path: Path | None) -> Path | None:
    return path if path is not None and Path(path).is_file() else None


def read_label_record(path: Path) -> tuple[bool, dict[str, Any] | None]:
    """(file holds label datasets, its label provenance or None)."""
    with h5py.File(path, "r") as f:
        raw = f.attrs.get(LABEL_ATTR)
        labelled = "patch_labels" in f
    if raw is None:
        return labelled, None
    return labelled, json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))


def write_label_record(f: h5py.File, prov: dict[str, Any]) -> None:
    f.attrs[LABEL_ATTR] = json.dumps(normalise(prov), sort_keys=True)


def _decide(target: Path | None, wanted: dict | None, overwrite: bool) -> bool:
    """True when ``target`` must be (re)written; raises StaleOutputError to refuse."""
    if target is None or wanted is None:
        return False
    if not target.is_file():
        return True
    labelled, recorded = read_label_record(target)
    if not labelled:  # a patch file or bag not labelled yet (in-place mode)
        return True
    return decide(target, recorded, wanted, overwrite, how=HOW) == "compute"


def _extracted_from(bag: Path, labelled: Path | None) -> bool:
    """True when ``bag`` records ``labelled`` (as it is now) as the patch file it came from."""
    if labelled is None or not labelled.is_file():
        return False
    made = (read_h5(bag) or {}).get("inputs", {}).get("patch_file")
    return made is not None and made == normalise(file_identity(labelled))


def plan_slide(job, config, overwrite: bool) -> LabelPlan:
    """Decide one slide's outputs (raises :class:`~histomil.provenance.StaleOutputError`)."""
    patch, bag = label_provenance(job, config)
    if bag is not None and _extracted_from(job.bag_file, job.output_file):
        bag = None  # extracted from this step's own labelled copy: it carries its labels
    decisions, refusals = [], []
    for target, wanted in ((job.patch_target, patch), (job.bag_target, bag)):
        try:
            decisions.append(_decide(target, wanted, overwrite))
        except StaleOutputError as exc:  # name every refused output of the slide at once
            refusals.append(str(exc))
    if refusals:
        raise StaleOutputError("\n".join(refusals))
    write_patch, write_bag = decisions
    qupath = job.qupath_file is not None and (write_patch or not job.qupath_file.is_file())
    return LabelPlan(patch, bag, write_patch, write_bag, qupath)
