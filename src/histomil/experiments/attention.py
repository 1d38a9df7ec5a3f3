"""Attention files of experiment runs, read for the threshold (paper Table 3) and localization
(paper Figure 5) experiments.

Both read the runs' attention files ``RUN/attention/<fold>/<slide>.h5`` (``attention``: the
pooling weights actually used, after thresholding; ``scores``: raw scores; ``patch_labels``),
so the runs must export attention for the test split (``output.attention_splits``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from histomil.evaluation import localization_metrics, mean_localization

LOC_METRICS = ("iou", "dice", "pointing", "pointing_lesion")


def positive_test_slides(run_dir: Path, key: str = "attention") -> Iterator[dict[str, Any]]:
    """Annotated positive test slides of every fold: ``fold``, ``slide_id``, values, labels."""
    from histomil.viz.attention import read_attention_h5, run_attention_files

    for fold, path in run_attention_files(run_dir):
        arrays, attrs = read_attention_h5(path)
        if attrs.get("split") != "test" or int(attrs.get("label", 0)) == 0:
            continue
        if "patch_labels" not in arrays:
            continue
        name = key if key in arrays else ("attention" if "attention" in arrays else "scores")
        labels = arrays["patch_labels"]
        if not (labels == 1).any():
            continue
        yield {
            "fold": int(fold),
            "slide_id": str(attrs.get("slide_id", path.stem)),
            "values": np.asarray(arrays[name], dtype=float),
            "labels": labels,
        }


def localization_rows(name: str, run_dir: Path, alphas, key: str) -> list[dict[str, Any]]:
    """Per fold and alpha: IoU, Dice and pointing game averaged over positive test slides."""
    by_fold: dict[int, list] = {}
    for s in positive_test_slides(run_dir, key):
        by_fold.setdefault(s["fold"], []).append(
            localization_metrics(s["values"], s["labels"], alphas)
        )
    rows = []
    for fold, per_slide in sorted(by_fold.items()):
        mean = mean_localization(per_slide)
        for alpha in alphas:
            rows.append(
                {"point": name, "method": name, "fold": fold, "alpha": float(alpha)}
                | {m: mean[alpha][m] for m in LOC_METRICS}
                | {"n_slides": mean["n_slides"]}
            )
    if not rows:
        raise ValueError(f"{run_dir}: no annotated positive test slide in the attention files")
    return rows
