"""Plan a labelling batch: which slides, which slide label, which annotation file.

A slide's label comes from the manifest when one is given; otherwise a slide with an
annotation file is positive and a slide without one is unknown (-1) unless the user says
unannotated slides are negative. Problems found while planning (a slide missing from the
manifest) are attached to the slide's job and reported by its task, never silently dropped.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from histomil.annotations.overlap import DEFAULT_MIN_OVERLAP
from histomil.annotations.readers import (
    ANNOTATION_SUFFIXES,
    AnnotationConfig,
    find_annotation_file,
)


@dataclass(frozen=True)
class LabelConfig:
    """How to turn annotations into labels.

    ``padding_px`` / ``padding_um`` (at most one) grow the lesion (level-0 px, or micrometres
    converted with the slide's level-0 mpp). ``unannotated``: what a slide without label and
    without annotation file is, ``"unknown"`` (-1) or ``"negative"`` (0). ``qupath`` also writes
    ``DIR/labels_geojson/<id>.geojson``.
    """

    padding_px: float | None = None
    padding_um: float | None = None
    min_overlap: float = DEFAULT_MIN_OVERLAP
    unannotated: str = "unknown"
    qupath: bool = False
    annotation: AnnotationConfig = field(default_factory=AnnotationConfig)

    def __post_init__(self) -> None:
        if self.padding_px is not None and self.padding_um is not None:
            raise ValueError("give padding in level-0 px or in micrometres, not both")
        for name in ("padding_px", "padding_um"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= self.min_overlap < 1.0:
            raise ValueError(f"min_overlap must be in [0, 1), got {self.min_overlap}")
        if self.unannotated not in ("unknown", "negative"):
            raise ValueError(
                f"unannotated must be 'unknown' or 'negative', got {self.unannotated!r}"
            )


@dataclass(frozen=True)
class SlideJob:
    """One slide to label: its files, its slide label (1, 0, -1 unknown) and annotation.

    ``output_file`` / ``bag_output``: where the labelled copies of the patch file / bag file go
    (None: into the input files themselves, the deprecated in-place mode).
    """

    slide_id: str
    patch_file: Path
    slide_label: int
    annotation_path: Path | None = None
    bag_file: Path | None = None
    tissue_file: Path | None = None
    qupath_file: Path | None = None
    problem: str | None = None  # found while planning; reported as this slide's error
    output_file: Path | None = None
    bag_output: Path | None = None

    @property
    def patch_target(self) -> Path:
        return self.output_file or self.patch_file

    @property
    def bag_target(self) -> Path | None:
        return None if self.bag_file is None else (self.bag_output or self.bag_file)


def plan_jobs(
    patches_dir: Path,
    annotations: Path,
    manifest: str | os.PathLike | None,
    config: LabelConfig,
    out_dir: Path | None = None,
) -> list[SlideJob]:
    """One :class:`SlideJob` per patch file, with slide labels and annotation files resolved.

    ``out_dir``: labelled copies go to ``out_dir/<id>.h5`` (and ``out_dir/bags/<id>.h5`` for a
    bag found in ``patches_dir/../bags``); None labels the input files in place. Raises when no
    annotation file at all matches a slide that is not negative (a wrong folder or naming).
    """
    from histomil.manifest import read_manifest

    if not patches_dir.is_dir():
        raise FileNotFoundError(f"patches directory {patches_dir} does not exist")
    patch_files = sorted(p for p in patches_dir.glob("*.h5") if not p.name.startswith("."))
    if not patch_files:
        others = sorted(p.name for p in patches_dir.iterdir() if not p.name.startswith("."))
        there = f"it holds {', '.join(others[:5])}" if others else "it is empty"
        raise FileNotFoundError(
            f"no patch files (*.h5) in {patches_dir} ({there}); run `histomil preprocess` first"
        )
    ann_dir: Path | None = None
    table = None
    if annotations.is_file() and annotations.suffix.lower() == ".csv":
        if manifest is not None and Path(manifest).resolve() != annotations.resolve():
            raise ValueError(
                f"--annotations is a manifest ({annotations}); do not pass another --manifest"
            )
        table = read_manifest(annotations, required=("slide_id",))
        if "annotation_path" not in table.columns:
            raise ValueError(f"manifest {annotations} has no annotation_path column")
    elif annotations.is_dir():
        ann_dir = annotations
        if manifest is not None:
            table = read_manifest(manifest, required=("slide_id",))
    else:
        raise FileNotFoundError(
            f"--annotations {annotations} is neither a directory nor a manifest CSV"
        )
    rows = {} if table is None else {str(r["slide_id"]): r for _, r in table.iterrows()}
    qupath_dir = (out_dir or patches_dir) / "labels_geojson"
    jobs = []
    for patch_file in patch_files:
        slide_id = patch_file.stem
        row = rows.get(slide_id)
        if table is not None and row is None:
            source = manifest if manifest is not None else annotations
            problem = f"slide {slide_id} is not in manifest {source}; add a row for it"
            jobs.append(SlideJob(slide_id, patch_file, slide_label=-1, problem=problem))
            continue
        ann_path = _annotation_for(slide_id, row, ann_dir)
        label = _label_from(row, ann_path, config.unannotated)
        bag = patches_dir.parent / "bags" / f"{slide_id}.h5"
        tissue = patches_dir.parent / "tissue" / f"{slide_id}.geojson"
        jobs.append(
            SlideJob(
                slide_id=slide_id,
                patch_file=patch_file,
                slide_label=label,
                annotation_path=ann_path,
                bag_file=bag if bag.is_file() else None,
                tissue_file=tissue if tissue.is_file() else None,
                qupath_file=qupath_dir / f"{slide_id}.geojson" if config.qupath else None,
                output_file=None if out_dir is None else out_dir / f"{slide_id}.h5",
                bag_output=None if out_dir is None else out_dir / "bags" / f"{slide_id}.h5",
            )
        )
    _check_some_annotation(jobs, annotations, ann_dir)
    return jobs


def _check_some_annotation(jobs: list[SlideJob], annotations: Path, ann_dir: Path | None) -> None:
    """Zero annotation files for a batch with positive or unknown slides is a wrong folder or
    naming, never a successful run that labels nothing."""
    planned = [j for j in jobs if j.problem is None]
    if any(j.annotation_path is not None for j in planned):
        return
    if not any(j.slide_label != 0 for j in planned):
        return  # every slide is negative: no annotation is expected
    ids = [j.slide_id for j in planned]
    if ann_dir is not None:
        present = sorted(p.name for p in ann_dir.iterdir() if not p.name.startswith("."))
        there = f"it holds {', '.join(present[:5])}" if present else "it is empty"
        raise FileNotFoundError(
            f"no annotation file in {ann_dir} matches any of the {len(ids)} slide(s): looked for "
            f"<slide_id>{'|'.join(ANNOTATION_SUFFIXES)} (e.g. {ids[0]}.xml) ({there}); "
            "name annotation files after the patch files, or pass a manifest CSV with an "
            "annotation_path column"
        )
    raise ValueError(
        f"manifest {annotations} gives no annotation_path for any of the {len(ids)} slide(s) "
        "to label; fill the annotation_path column"
    )


def _annotation_for(slide_id: str, row, ann_dir: Path | None) -> Path | None:
    if ann_dir is not None:
        return find_annotation_file(ann_dir, slide_id)
    value = None if row is None else row.get("annotation_path")
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        return None
    return Path(str(value))  # a missing file is reported by this slide's task


def _label_from(row, ann_path: Path | None, unannotated: str) -> int:
    value = None if row is None else row.get("label")
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        text = str(value).strip().lower()
        if text in ("1", "1.0", "true", "positive", "tumor", "tumour", "abnormal", "lesion"):
            return 1
        if text in ("0", "0.0", "false", "negative", "normal"):
            return 0
        try:
            return 1 if float(text) > 0 else 0
        except ValueError as exc:
            raise ValueError(
                f"slide label {value!r} is not understood; use 1 (positive) or 0 (negative)"
            ) from exc
    if ann_path is not None:
        return 1
    return 0 if unannotated == "negative" else -1
