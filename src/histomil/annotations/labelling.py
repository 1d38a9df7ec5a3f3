"""`histomil label`: patch labels, overlaps and attention targets for every patch file.

For each ``DIR/<slide_id>.h5`` written by preprocessing (and ``DIR/../bags/<slide_id>.h5`` when
features exist) this writes a labelled copy into the output folder (or, deprecated, the file
itself) with ``patch_labels`` (int8: 1 lesion, 0 non-lesion, -1 unknown), ``overlap`` (float32,
NaN when unknown) and ``attn_target`` (float32, sums to 1 on annotated positive slides, 0
otherwise) plus attributes describing how they were made and their provenance. Files are
copied, modified and moved into place, so an interrupted run never leaves a half-written file;
a rerun skips slides labelled from the same inputs. One task per slide through
:func:`run_tasks`.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

from histomil._io import atomic_path, atomic_write_json, write_csv
from histomil.annotations.label_reruns import LabelPlan, plan_slide, write_label_record
from histomil.annotations.overlap import (
    attention_target,
    patch_labels,
    region_overlap,
)
from histomil.annotations.planning import LabelConfig, SlideJob, plan_jobs
from histomil.annotations.readers import (
    AnnotationError,
    Annotations,
    read_annotations,
    read_geojson_geometry,
)
from histomil.executors import (
    BatchError,
    ExecutorConfig,
    Task,
    TaskResult,
    one_line,
    run_tasks,
    write_error_log,
)
from histomil.provenance import StaleOutputError, refuse

log = logging.getLogger(__name__)

LABEL_DATASETS = ("patch_labels", "overlap", "attn_target")
ERROR_LOG = "label_errors.log"
__all__ = [
    "LabelConfig",
    "SlideJob",
    "label_patches_dir",
    "label_slide",
    "plan_jobs",
    "write_labels",
]

STATUS_COLUMNS = (
    "slide_id",
    "status",
    "n_patches",
    "n_lesion",
    "slide_label",
    "annotated",
    "error",
)


def label_patches_dir(
    patches_dir: str | os.PathLike,
    annotations: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    config: LabelConfig = LabelConfig(),
    executor: ExecutorConfig | None = None,
    skip_errors: bool = False,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Label every ``patches_dir/*.h5``; ``annotations`` is a directory of ``<id>.xml|.geojson|
    .json`` files or a manifest CSV with ``annotation_path``.

    With ``out_dir``, labelled copies go to ``out_dir/<id>.h5`` (extract from that folder), a
    bag found in ``patches_dir/../bags`` is copied with labels to ``out_dir/bags/<id>.h5``, and
    ``label.csv``, ``label_config.json``, ``labels_geojson/`` and ``label_errors.log`` go to
    ``out_dir``: the inputs are never written. ``out_dir=None`` (deprecated) labels the patch
    files and bags in place. Every slide is decided before anything is written
    (:mod:`histomil.annotations.label_reruns`): outputs made from the same inputs are
    ``skipped``, others refused (:class:`~histomil.provenance.StaleOutputError` naming what
    changed) or relabelled with ``overwrite``. Slides without patches are ``empty``. Raises
    :class:`BatchError` after the batch when a slide failed, unless ``skip_errors``.
    """
    patches_dir = Path(patches_dir)
    if out_dir is None:
        warnings.warn(
            "label without an output folder writes into the patch files and bags it reads "
            "(bags extracted from them then count as made from another patch file); pass "
            "out_dir (--out DIR) to write labelled copies there",
            DeprecationWarning,
            stacklevel=2,
        )
        dest = patches_dir
    else:
        dest = Path(out_dir)
        if dest.resolve() == patches_dir.resolve():
            raise ValueError(
                f"--out {dest} is the patches folder; label never writes into its inputs, "
                "choose another folder"
            )
    jobs = plan_jobs(
        patches_dir, Path(annotations), manifest, config, None if out_dir is None else dest
    )
    plans, rows = _plan_all(jobs, config, overwrite, dest)
    errors: dict[str, str] = {}

    def on_result(result: TaskResult) -> None:
        if result.ok:
            rows[result.key] = result.value
        else:
            rows[result.key] = _row(result.key, "error", error=one_line(result.error))
            errors[result.key] = result.error or ""
            write_error_log(dest / ERROR_LOG, errors)

    dest.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(config), "annotations": str(annotations), "manifest": manifest}
    atomic_write_json(dest / "label_config.json", settings)
    tasks = [
        Task(j.slide_id, label_slide, {"job": j, "config": config, "plan": plans[j.slide_id]})
        for j in jobs
        if j.slide_id not in rows
    ]
    run_tasks(tasks, executor, description="label", on_result=on_result)
    write_error_log(dest / ERROR_LOG, errors)
    table = pd.DataFrame([rows[j.slide_id] for j in jobs], columns=list(STATUS_COLUMNS))
    for column in ("n_patches", "n_lesion", "slide_label"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    write_csv(table, dest / "label.csv")
    failed = table[table["status"] == "error"]
    if len(failed) and not skip_errors:
        first = failed.iloc[0]
        raise BatchError(
            f"{len(failed)} of {len(table)} slide(s) failed to label (see {dest / 'label.csv'}, "
            f"tracebacks in {dest / ERROR_LOG}); first: {first['slide_id']}: {first['error']}. "
            "Fix them or pass --skip-errors."
        )
    return table


def _plan_all(jobs, config: LabelConfig, overwrite: bool, dest: Path):
    """Plans of the slides to label and rows of those skipped; refuses before any write."""
    plans: dict[str, LabelPlan | None] = {}
    rows: dict[str, dict] = {}
    problems: list[str] = []
    for job in jobs:
        if job.problem:
            plans[job.slide_id] = None  # the task reports the problem
            continue
        try:
            plan = plan_slide(job, config, overwrite)
        except StaleOutputError as exc:
            problems.append(str(exc))
            continue
        except OSError:  # a missing/unreadable input: the task reports it
            plans[job.slide_id] = None
            continue
        plans[job.slide_id] = plan
        if not plan.anything:
            rows[job.slide_id] = _skipped_row(job)
    refuse(problems, f"{len(problems)} slide(s) already have labels in {dest}")
    return plans, rows


def _skipped_row(job: SlideJob) -> dict:
    with h5py.File(job.patch_target, "r") as f:
        labels = f["patch_labels"][:]
        annotated = bool(f.attrs.get("annotated", False))
    status = "skipped" if len(labels) else "empty"
    return _row(
        job.slide_id, status, len(labels), int((labels == 1).sum()), job.slide_label, annotated
    )


def label_slide(job: SlideJob, config: LabelConfig, plan: LabelPlan | None = None) -> dict:
    """Label one slide's patch file (and bag file) as ``plan`` says (decided here, without
    overwriting, when None); returns its ``label.csv`` row."""
    if job.problem:
        raise ValueError(job.problem)
    plan = plan or plan_slide(job, config, overwrite=False)
    if not plan.anything:
        return _skipped_row(job)
    with h5py.File(job.patch_file, "r") as f:
        if "coords" not in f:
            raise ValueError(f"patch file {job.patch_file} has no 'coords' dataset")
        coords = f["coords"][:]
        tissue_frac = f["tissue"][:] if "tissue" in f else None
        attrs = dict(f.attrs)
    if "patch_size_level0" not in attrs:
        raise ValueError(f"patch file {job.patch_file} lacks the 'patch_size_level0' attribute")
    if len(coords) == 0:  # preprocess found no tissue: nothing to label, not an error
        if plan.write_patch:
            write_labels(job.patch_file, _empty_values(), {}, job.patch_target, plan.record)
        return _row(job.slide_id, "empty", 0, 0, job.slide_label, job.annotation_path is not None)
    size0 = float(attrs["patch_size_level0"])
    padding = _padding_px(job, config, attrs)
    ann = None
    if job.annotation_path is not None:
        if job.slide_label == 0:
            raise AnnotationError(
                f"slide {job.slide_id} is labelled negative but has annotation file "
                f"{job.annotation_path}; fix the label or remove the file"
            )
        ann = read_annotations(job.annotation_path, config.annotation, _slide_size(attrs))
    tissue = read_geojson_geometry(job.tissue_file) if job.tissue_file and ann else None
    geo = _SlideGeometry(ann, padding, tissue)
    values = _compute(coords, tissue_frac, size0, geo, job, config)
    meta = {
        "slide_label": int(job.slide_label),
        "annotated": ann is not None,
        "label_min_overlap": float(config.min_overlap),
        "label_padding_px": float(padding),
        "annotation_path": str(Path(job.annotation_path).absolute()) if job.annotation_path else "",
    }
    if plan.write_patch:
        write_labels(job.patch_file, values, meta, job.patch_target, plan.record)
    if plan.write_bag:
        _label_bag(job, coords, size0, (values, meta), geo, config, plan.bag_record)
    if plan.write_qupath:
        from histomil.annotations.qupath import labelled_patches_geojson, write_geojson

        collection = labelled_patches_geojson(
            coords, size0, values["patch_labels"], values["overlap"], ann, padding
        )
        write_geojson(job.qupath_file, collection)
    n_lesion = int((values["patch_labels"] == 1).sum())
    return _row(job.slide_id, "ok", len(coords), n_lesion, job.slide_label, ann is not None)


def _empty_values() -> dict[str, np.ndarray]:
    return {
        "patch_labels": np.zeros(0, dtype=np.int8),
        "overlap": np.zeros(0, dtype=np.float32),
        "attn_target": np.zeros(0, dtype=np.float32),
    }


def write_labels(
    path: Path,
    values: dict[str, np.ndarray],
    meta: dict,
    target: Path | None = None,
    provenance: dict | None = None,
) -> None:
    """Write ``path`` with its label datasets/attributes replaced to ``target`` (default: back
    to ``path``) atomically: copy, edit, rename. ``provenance`` is stored as the label record."""
    target = Path(target or path)
    with atomic_path(target) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            n = f["coords"].shape[0] if "coords" in f else None
            for name in LABEL_DATASETS:
                if n is not None and len(values[name]) != n:
                    raise ValueError(f"{path}: {name} has {len(values[name])} rows, coords {n}")
                if name in f:
                    del f[name]
                f.create_dataset(name, data=values[name])
            for key, value in meta.items():
                f.attrs[key] = value
            if provenance is not None:
                write_label_record(f, provenance)


@dataclass(frozen=True)
class _SlideGeometry:
    """What one slide's labels are computed from: annotations (None: unannotated), the padding
    in level-0 px and the tissue polygons (None: use the patches' tissue fractions)."""

    ann: Annotations | None
    padding: float
    tissue: BaseGeometry | None


def _compute(coords, tissue_frac, size0, geo: _SlideGeometry, job, config) -> dict:
    n = len(coords)
    ann = geo.ann
    if job.slide_label == 0:
        overlap = np.zeros(n, dtype=np.float32)
        return {
            "patch_labels": np.zeros(n, dtype=np.int8),
            "overlap": overlap,
            "attn_target": np.zeros(n, dtype=np.float32),
        }
    if ann is None:  # positive or unknown slide without annotation: labels unknown
        return {
            "patch_labels": np.full(n, -1, dtype=np.int8),
            "overlap": np.full(n, np.nan, dtype=np.float32),
            "attn_target": np.zeros(n, dtype=np.float32),
        }
    region = ann.region(geo.padding)
    overlap = region_overlap(coords, size0, region)
    target = attention_target(coords, size0, region, geo.tissue, tissue_frac)
    if target.sum() == 0:
        log.warning(
            "slide %s: annotation %s covers no patch; attention target is all 0",
            job.slide_id, job.annotation_path,
        )  # fmt: skip
    return {
        "patch_labels": patch_labels(overlap, config.min_overlap),
        "overlap": overlap.astype(np.float32),
        "attn_target": target.astype(np.float32),
    }


def _label_bag(job, coords, size0, written: tuple[dict, dict], geo, config, prov) -> None:
    values, meta = written
    with h5py.File(job.bag_file, "r") as f:
        if "coords" not in f:
            raise ValueError(f"bag file {job.bag_file} has no 'coords' dataset")
        bag_coords = f["coords"][:]
        bag_tissue = f["tissue"][:] if "tissue" in f else None
        bag_size0 = float(f.attrs.get("patch_size_level0", size0))
    if (
        bag_coords.shape == coords.shape
        and np.array_equal(bag_coords, coords)
        and bag_size0 == size0
    ):
        bag_values = values
    else:  # the bag keeps a different subset/order of patches: compute on its own grid
        bag_values = _compute(bag_coords, bag_tissue, bag_size0, geo, job, config)
    write_labels(job.bag_file, bag_values, meta, job.bag_target, prov)


def _padding_px(job: SlideJob, config: LabelConfig, attrs: dict) -> float:
    if config.padding_um is None:
        return float(config.padding_px or 0.0)
    mpp = attrs.get("level0_mpp")
    if mpp is None or not np.isfinite(float(mpp)) or float(mpp) <= 0:
        raise ValueError(
            f"slide {job.slide_id}: --padding-um needs the level-0 mpp, missing in "
            f"{job.patch_file}; use --padding-px or rerun preprocess with a known mpp"
        )
    return float(config.padding_um) / float(mpp)


def _slide_size(attrs: dict) -> tuple[int, int] | None:
    """Level-0 (width, height) from the patch file's attributes or the slide itself, if known."""
    for w_key, h_key in (("level0_width", "level0_height"), ("slide_width", "slide_height")):
        if w_key in attrs and h_key in attrs:
            return int(attrs[w_key]), int(attrs[h_key])
    for key in ("level0_dimensions", "slide_dimensions"):
        if key in attrs and len(attrs[key]) == 2:
            return int(attrs[key][0]), int(attrs[key][1])
    slide_path = attrs.get("slide_path")
    if not slide_path or not Path(str(slide_path)).is_file():
        return None
    from histomil.slides import open_slide

    try:
        with open_slide(str(slide_path)) as slide:
            return slide.dimensions
    except Exception as exc:  # noqa: BLE001 - unknown size only disables the bounds check
        log.info("cannot open %s for its size (%s); bounds check skipped", slide_path, exc)
        return None


def _row(
    slide_id, status, n_patches=None, n_lesion=None, slide_label=None, annotated=None, error=""
):
    """One ``label.csv`` row; counts not given (a failed slide) are unknown, not 0."""
    return {
        "slide_id": slide_id,
        "status": status,
        "n_patches": n_patches,
        "n_lesion": n_lesion,
        "slide_label": slide_label,
        "annotated": annotated,
        "error": error,
    }
