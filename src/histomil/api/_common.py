"""What every step of the Python API shares: result objects, path and vocabulary helpers."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas only for type hints; imported inside the steps
    import pandas as pd

PathLike = str | os.PathLike

# One spelling per value, shared with the YAML configs (``train.precision``). ``auto`` lets
# extraction pick bfloat16 where the device runs it natively.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# Spellings of the previous release, accepted with a deprecation warning.
OLD_PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DTYPES = ("float32", "float16")
RAY_LOG = "ray.log"  # Ray's own messages, in the step's output folder


@dataclass(frozen=True)
class StepResult:
    """What a batch step (preprocess, label, extract) did.

    ``out``: the output folder; ``table``: the status table, one row per slide (also saved as
    ``status_file``; given as a DataFrame or a function returning one, called on first access);
    ``counts``: number of slides per status.
    """

    out: Path
    table: pd.DataFrame = field(repr=False)
    status_file: Path
    counts: Mapping[str, int]

    @property
    def n_slides(self) -> int:
        return int(len(self.table))

    def __getattribute__(self, name: str) -> Any:
        # ``table`` may be given as a function that builds it, called on first access: a step
        # can then return without importing pandas (0.3-0.5 s of a command's start-up)
        value = object.__getattribute__(self, name)
        if name == "table" and callable(value):
            value = value()
            object.__setattr__(self, "table", value)
        return value


@dataclass(frozen=True)
class PreprocessResult(StepResult):
    """Preprocessing outputs: ``out/patches/<slide_id>.h5``, ``out/tissue/``, ``out/thumbnails/``."""

    n_patches: int = 0

    @property
    def patches_dir(self) -> Path:
        return self.out / "patches"


@dataclass(frozen=True)
class LabelResult(StepResult):
    """Labelling outputs; ``n_lesion`` counts lesion patches over all slides."""

    n_lesion: int = 0


@dataclass(frozen=True)
class ExtractResult(StepResult):
    """Extraction outputs: bag files in ``bags_dir`` (``out/bags`` for the histomil layout,
    ``out/h5_files`` for CLAM's, ``out/features_<encoder>`` for TRIDENT's)."""

    features_dir: Path | None = None

    @property
    def bags_dir(self) -> Path:
        return self.features_dir if self.features_dir is not None else self.out / "bags"


@dataclass(frozen=True)
class TrainResult:
    """A training run: its folder, per-fold summaries, aggregated metrics, predictions."""

    out: Path
    folds: tuple[dict[str, Any], ...] = field(repr=False)
    metrics: Mapping[str, Any] = field(repr=False)
    predictions: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def n_folds(self) -> int:
        return len(self.folds)


@dataclass(frozen=True)
class HeatmapResult:
    """A heatmap PNG (``png``) in ``out`` and its top/bottom montage when one was drawn."""

    out: Path
    png: Path
    montage: Path | None = None


def status_counts(table: pd.DataFrame) -> dict[str, int]:
    """Slides per status as plain ints (never ``12.0``)."""
    if "status" not in table.columns or table.empty:
        return {}
    return {str(k): int(v) for k, v in table["status"].value_counts().sort_index().items()}


def absolute(path: PathLike | None) -> Path | None:
    """``path`` made absolute: outputs store paths that do not depend on the working directory."""
    return None if path is None else Path(path).expanduser().absolute()


def existing(path: PathLike, what: str, *, kind: str = "any") -> Path:
    """``path`` as an absolute Path, or FileNotFoundError naming ``what`` when it is missing."""
    p = absolute(path)
    assert p is not None
    if not p.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if kind == "dir" and not p.is_dir():
        raise NotADirectoryError(f"{what} {path} is not a folder")
    if kind == "file" and not p.is_file():
        raise FileNotFoundError(f"{what} {path} is not a file")
    return p


def annotation_file(annotations: PathLike | None, slide_id: str) -> Path | None:
    """An annotation file, or the ``<slide_id>.<ext>`` file of an annotations folder."""
    if annotations is None:
        return None
    path = existing(annotations, "annotations")
    if path.is_dir():
        from histomil.annotations.readers import find_annotation_file

        found = find_annotation_file(path, slide_id)
        if found is None:
            raise FileNotFoundError(f"no annotation file for slide {slide_id} in {path}")
        return found
    return path


def as_list(paths: PathLike | Sequence[PathLike]) -> list[PathLike]:
    return [paths] if isinstance(paths, str | os.PathLike) else list(paths)


def precision_value(precision: str) -> str:
    """A ``--precision`` value in the shared spelling (old spellings warn once)."""
    if precision in OLD_PRECISIONS:
        new = OLD_PRECISIONS[precision]
        warnings.warn(
            f"precision {precision!r} is deprecated and will be removed in the next release; "
            f"use {new!r} (the spelling of train.precision)",
            FutureWarning,
            stacklevel=3,
        )
        return new
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def executor(
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    cpus_per_task: float = 1.0,
    ray_timeout: float = 30.0,
    log_dir: PathLike | None = None,
):  # noqa: ANN201  (ExecutorConfig, imported lazily)
    """The executor settings shared by every step. With ``executor="ray"`` the cluster is
    connected here, within ``ray_timeout`` seconds, before the step writes anything
    (:func:`histomil.executors.ensure_connected`), and Ray's own messages go to
    ``log_dir/ray.log`` (the step's output folder) instead of the terminal."""
    from histomil.executors import ExecutorConfig, ensure_connected

    config = ExecutorConfig(
        executor=executor,
        workers=workers,
        ray_address=ray_address,
        num_cpus_per_task=cpus_per_task,
        ray_timeout=ray_timeout,
        ray_log=None if log_dir is None or executor != "ray" else str(Path(log_dir) / RAY_LOG),
    )
    ensure_connected(config)
    return config
