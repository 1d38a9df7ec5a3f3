"""``preprocess``, ``label`` and ``extract``: the batch steps with the CLI's parameters.

Each function checks its inputs before any work starts (missing folders, missing weights), makes
every path absolute (so paths stored in outputs never depend on the working directory) and
returns a frozen result object. ``histomil preprocess|label|extract`` call exactly these.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from histomil.api._common import (
    DTYPES,
    ExtractResult,
    LabelResult,
    PathLike,
    PreprocessResult,
    absolute,
    as_list,
    existing,
    precision_value,
    status_counts,
)
from histomil.api._common import executor as make_executor

# The extraction library's own spellings of the shared precision values.
_LIBRARY_PRECISION = {"auto": "auto", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def preprocess(
    slides: PathLike | Sequence[PathLike],
    out: PathLike,
    *,
    patch_size: int = 224,
    target_mpp: float | None = None,
    target_magnification: float | None = None,
    level0_mpp: float | None = None,
    min_tissue: float = 0.05,
    segmentation: str = "saturation",
    backend: str | None = None,
    overwrite: bool = False,
    skip_errors: bool = False,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    cpus_per_task: float = 1.0,
    ray_timeout: float = 30.0,
) -> PreprocessResult:
    """Segment tissue and tile ``slides`` (files, folders of slides, manifest CSVs) into ``out``.

    ``target_mpp`` (default 0.5 um/px = 20x) or ``target_magnification``: the resolution of the
    patches; ``level0_mpp``: the slides' own level-0 um/px when their metadata lacks it.
    """
    from histomil.slides.preprocess import PreprocessConfig, preprocess_rows, status_frame
    from histomil.slides.tiling import mpp_from_magnification
    from histomil.slides.tissue import SegmentationConfig

    if target_mpp is not None and target_magnification is not None:
        raise ValueError("give either a target mpp or a target magnification, not both")
    inputs = [existing(p, "slide input") for p in as_list(slides)]
    target = 0.5 if target_mpp is None else target_mpp
    if target_magnification is not None:
        target = mpp_from_magnification(target_magnification)
    config = PreprocessConfig(
        patch_size=patch_size,
        target_mpp=target,
        min_tissue=min_tissue,
        segmentation=SegmentationConfig(method=segmentation),
        backend=backend,
    )
    ex = make_executor(
        workers, executor, ray_address, cpus_per_task, ray_timeout, log_dir=absolute(out)
    )
    out = absolute(out)
    rows = preprocess_rows(
        inputs, out, config, ex, slide_mpp=level0_mpp, skip_errors=skip_errors, overwrite=overwrite
    )
    n_patches = sum(max(0, int(r["n_patches"])) for r in rows)
    counts = dict(sorted(Counter(str(r["status"]) for r in rows).items()))
    # the DataFrame is built on first access of .table: the CLI prints counts only
    return PreprocessResult(
        out, lambda: status_frame(rows), out / "preprocess.csv", counts, n_patches=n_patches
    )


def label(
    patches: PathLike,
    annotations: PathLike,
    out: PathLike | None = None,
    *,
    manifest: PathLike | None = None,
    padding_px: float | None = None,
    padding_um: float | None = None,
    min_overlap: float = 0.05,
    unannotated: str = "unknown",
    qupath: bool = False,
    overwrite: bool = False,
    skip_errors: bool = False,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    cpus_per_task: float = 1.0,
    ray_timeout: float = 30.0,
) -> LabelResult:
    """Patch labels, overlaps and attention targets of every patch file in ``patches``.

    ``annotations``: one annotation file (``.xml``/``.geojson``/``.json``), a folder of
    ``<slide_id>.<ext>`` files, or a manifest CSV with an ``annotation_path`` column.
    ``out``: the output folder (``label.csv``, ``labels_geojson/``); without it the outputs go
    into ``patches`` as in earlier releases (deprecated).
    """
    from histomil.annotations.labelling import LabelConfig, label_patches_dir

    patches_dir = existing(patches, "patches folder", kind="dir")
    ann = existing(annotations, "annotations")
    manifest_path = None if manifest is None else existing(manifest, "manifest", kind="file")
    if out is None:
        warnings.warn(
            f"label without an output folder writes into the patches folder {patches_dir}; "
            "this is deprecated, pass --out DIR (out=...)",
            FutureWarning,
            stacklevel=2,
        )
    out_dir = absolute(out)
    config = LabelConfig(
        padding_px=padding_px,
        padding_um=padding_um,
        min_overlap=min_overlap,
        unannotated=unannotated,
        qupath=qupath,
    )
    if ann.is_file() and ann.suffix.lower() != ".csv":
        ann = _single_file_manifest(patches_dir, ann, manifest_path, out_dir or patches_dir)
        manifest_path = None
    ex = make_executor(
        workers, executor, ray_address, cpus_per_task, ray_timeout, log_dir=out_dir or patches_dir
    )
    table = label_patches_dir(
        patches_dir,
        ann,
        manifest_path,
        config,
        ex,
        skip_errors,
        out_dir=out_dir,
        overwrite=overwrite,
    )
    where = out_dir or patches_dir
    n_lesion = int(table["n_lesion"].sum()) if len(table) else 0
    return LabelResult(where, table, where / "label.csv", status_counts(table), n_lesion=n_lesion)


def _single_file_manifest(
    patches_dir: Path, ann_file: Path, manifest: Path | None, where: Path
) -> Path:
    """A manifest (``where/annotations.csv``) giving ``ann_file`` to the slide it belongs to.

    The slide is the one whose id is the file's name (``<slide_id>.geojson``), or the only patch
    file of ``patches_dir``. Labels come from ``manifest`` when given.
    """
    import pandas as pd

    from histomil._io import slide_id_from_path, write_csv
    from histomil.annotations.readers import ANNOTATION_SUFFIXES
    from histomil.manifest import read_manifest

    if ann_file.suffix.lower() not in ANNOTATION_SUFFIXES:
        raise ValueError(
            f"annotation file {ann_file} is not {' | '.join(ANNOTATION_SUFFIXES)} (or a folder "
            "of them, or a manifest CSV)"
        )
    ids = sorted(p.stem for p in patches_dir.glob("*.h5") if not p.name.startswith("."))
    owner = slide_id_from_path(ann_file)
    if owner not in ids:
        if len(ids) != 1:
            raise ValueError(
                f"annotation file {ann_file.name} matches no slide id in {patches_dir} "
                f"({len(ids)} patch files); name it <slide_id>{ann_file.suffix} or pass a folder"
            )
        owner = ids[0]
    table = pd.DataFrame({"slide_id": ids})
    if manifest is not None:
        labels = read_manifest(manifest, required=("slide_id",))
        if "label" in labels.columns:
            table = table.merge(labels[["slide_id", "label"]], on="slide_id", how="left")
    table["annotation_path"] = [str(ann_file) if i == owner else "" for i in table["slide_id"]]
    path = where / "annotations.csv"
    write_csv(table, path)
    return path


def extract(
    patches: PathLike,
    out: PathLike,
    *,
    encoder: str = "resnet50_trunc",
    weights: PathLike | None = None,
    random_weights: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    readers: int = 2,
    device: str = "auto",
    precision: str = "auto",
    dtype: str = "float32",
    export_pt: bool = False,
    layout: str = "histomil",
    slides: PathLike | None = None,
    overwrite: bool = False,
    skip_errors: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
    cpus_per_task: float = 1.0,
    ray_timeout: float = 30.0,
) -> ExtractResult:
    """Encode every patch of every patch file in ``patches`` into ``out/bags/<slide_id>.h5``.

    ``readers``: patch-reading processes per slide; ``precision``: compute precision (``auto``
    picks bfloat16 where the device runs it natively); ``dtype``: stored feature dtype;
    ``layout``: histomil | clam | trident output folders (:mod:`histomil.bags.layouts`);
    ``slides``: folder holding the slides when they moved since preprocessing. The encoder and
    its weights are loaded once before any slide is read, so missing weights stop the command
    at once.
    """
    import pandas as pd

    from histomil.features import ExtractConfig, WeightsSpec

    patches_dir = existing(patches, "patches folder", kind="dir")
    slides_dir = None if slides is None else existing(slides, "slides folder", kind="dir")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    config = ExtractConfig(
        encoder=encoder,
        weights=WeightsSpec(path=absolute(weights), random=random_weights, seed=seed),
        batch_size=batch_size,
        workers=readers,
        device=device,
        precision=_LIBRARY_PRECISION[precision_value(precision)],
        storage_dtype=dtype,
        export_pt=export_pt,
        overwrite=overwrite,
        slides_dir=None if slides_dir is None else str(slides_dir),
        layout=layout,
    )
    ex = make_executor(1, executor, ray_address, cpus_per_task, ray_timeout, log_dir=absolute(out))
    _check_encoder(config, ex.executor)
    out = absolute(out)
    from histomil.features.extract import bag_path_for, extract_dir

    rows = extract_dir(patches_dir, out, config, ex, skip_errors=skip_errors)
    table = pd.DataFrame(rows)
    features_dir = bag_path_for(out, "slide", config).parent
    return ExtractResult(out, table, out / "extract.csv", status_counts(table), features_dir)


def _check_encoder(config, executor_name: str) -> None:  # noqa: ANN001
    """Build the encoder with its weights once, before any slide is read.

    Locally the built encoder is the one the slides then use (cached per process); on Ray it is
    dropped again after the check.
    """
    from histomil.features import extract as fx

    fx.get_runner(config)
    if executor_name != "local":
        fx._RUNNERS.clear()
