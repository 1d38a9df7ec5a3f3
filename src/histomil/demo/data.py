"""Demo steps from pixels to bags: synthetic slides, preprocessing, labels, features."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histomil._io import read_csv
from histomil.demo.settings import FULL, QUICK, DemoPaths, DemoSettings

ENCODER = "resnet50_trunc"


def _workers(workers: int) -> int:
    return max(1, min(workers, os.cpu_count() or 1))


def step_synthetic_slides(
    paths: DemoPaths, quick: bool, seed: int, settings: DemoSettings | None = None
) -> Path:
    """Step 1: small pyramidal TIFFs (half positive) with ASAP XML / GeoJSON lesions.

    Skipped when the manifest and every slide it lists already exist (a resumed demo).
    """
    from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides

    settings = settings or (QUICK if quick else FULL)
    if paths.manifest.is_file():
        listed = read_csv(paths.manifest)
        if len(listed) == settings.n_slides and all(
            (paths.synthetic / p).is_file() for p in listed["slide_path"]
        ):
            return paths.manifest
    config = SlideSynthConfig(
        size=settings.slide_size,
        lesion_contrast=settings.lesion_contrast,
        lesion_scale=settings.lesion_scale,
    )
    return make_synthetic_slides(paths.synthetic, settings.n_slides, seed, config, 0.5)


def step_preprocess(
    paths: DemoPaths,
    real_slide: Path | None = None,
    workers: int = 2,
    settings: DemoSettings | None = None,
) -> pd.DataFrame:
    """Step 2: tissue segmentation and tiling (``settings.patch_size`` px at 20x) of the
    synthetic slides; the real slide, when given, goes to ``paths.real`` with the papers'
    224-px patches. Returns the status table of both (finished slides are ``skipped``)."""
    from histomil.executors import ExecutorConfig
    from histomil.slides.preprocess import PreprocessConfig, preprocess_slides

    settings = settings or QUICK
    executor = ExecutorConfig(workers=_workers(workers))
    config = PreprocessConfig(patch_size=settings.patch_size)
    table = preprocess_slides([paths.manifest], paths.preprocess, config, executor)
    if real_slide is None:
        return table
    real = preprocess_slides([real_slide], paths.real, PreprocessConfig(), executor)
    return pd.concat([table, real], ignore_index=True)


def labelled_patches(paths: DemoPaths) -> Path:
    """Where step 3 writes the labelled copies of the patch files (extraction reads them)."""
    return paths.preprocess / "labels"


def step_label(paths: DemoPaths, workers: int = 2) -> pd.DataFrame:
    """Step 3: patch labels and overlaps from the lesion annotations, as labelled copies of
    the patch files (slides labelled from the same inputs are skipped on a rerun)."""
    from histomil.annotations.labelling import label_patches_dir
    from histomil.executors import ExecutorConfig

    return label_patches_dir(
        paths.patches,
        paths.manifest,
        executor=ExecutorConfig(workers=_workers(workers)),
        out_dir=labelled_patches(paths),
    )


def step_extract(paths: DemoPaths, seed: int, weights: Path | None = None) -> list[dict[str, Any]]:
    """Step 4: ResNet-50 (up to layer3) features of every synthetic patch into bag files.

    ``weights``: a local ResNet-50 checkpoint; without one the encoder gets random weights
    seeded by ``seed`` (recorded in every bag). Slides whose bag exists are skipped.
    """
    from histomil.features.encoders import WeightsSpec
    from histomil.features.extract import ExtractConfig, extract_dir

    spec = WeightsSpec(path=weights) if weights else WeightsSpec(random=True, seed=seed)
    config = ExtractConfig(
        encoder=ENCODER, weights=spec, batch_size=64, workers=1, progress=sys.stdout.isatty()
    )
    return extract_dir(labelled_patches(paths), paths.preprocess, config)


def feature_separation(paths: DemoPaths) -> dict[str, float]:
    """Sanity check of the features (not a model result): how well one direction, the mean
    lesion-minus-normal difference of the annotated patches, separates lesion from normal
    patches (AUROC over all annotated patches), and the share of feature dimensions whose
    standardised mean difference exceeds 1."""
    import h5py
    from sklearn.metrics import roc_auc_score

    feats, labels = [], []
    for bag in sorted(paths.bags.glob("*.h5")):
        with h5py.File(bag, "r") as f:
            if "patch_labels" not in f:
                continue
            y = f["patch_labels"][:]
            keep = y >= 0
            feats.append(f["features"][:][keep].astype(np.float64))
            labels.append(y[keep])
    if not feats:
        return {}
    x, y = np.concatenate(feats), np.concatenate(labels)
    if y.min() == y.max():
        return {}
    diff = x[y == 1].mean(0) - x[y == 0].mean(0)
    pooled_sd = x.std(0) + 1e-6
    return {
        "patches": int(len(y)),
        "lesion_patches": int(y.sum()),
        "direction_auroc": float(roc_auc_score(y, x @ diff)),
        "share_dims_d_gt_1": float(np.mean(np.abs(diff) / pooled_sd > 1.0)),
    }
