"""The Python API: one function per pipeline step, with the parameters of the CLI command.

    from histomil import preprocess, label, extract, train, heatmap

    pre = preprocess("slides/", "job")                       # -> PreprocessResult
    lab = label(pre.patches_dir, "annotations/", "job/labels")  # -> LabelResult
    ext = extract(pre.patches_dir, "job", random_weights=True)  # -> ExtractResult

Each returns a frozen result object (output folder, status table, counts). The ``histomil``
commands call exactly these functions. See docs/api.md.
"""

from __future__ import annotations

from histomil.api._common import (
    ExtractResult,
    HeatmapResult,
    LabelResult,
    PreprocessResult,
    StepResult,
    TrainResult,
)
from histomil.api.run import heatmap, train
from histomil.api.steps import extract, label, preprocess

__all__ = [
    "ExtractResult",
    "HeatmapResult",
    "LabelResult",
    "PreprocessResult",
    "StepResult",
    "TrainResult",
    "extract",
    "heatmap",
    "label",
    "preprocess",
    "train",
]
