"""Synthetic CAMELYON-like feature bags (and a survival cohort) for experiments without data.

``generate_bags(out, preset, seed, **overrides)`` writes ``out/bags/<slide_id>.h5`` (the bag
format of DESIGN.md plus synthetic ground truth ``true_overlap`` and ``distractor``),
``out/annotations/<slide_id>.geojson`` (annotated lesion polygons), ``out/manifest.csv`` and
``out/synth.json`` (settings and statistics). See docs/synthetic.md for the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histomil._io import atomic_path, atomic_write_json, atomic_write_text
from histomil.synth.bag_config import PRESETS, BagSynthConfig, make_config
from histomil.synth.bag_grid import geojson_polygons
from histomil.synth.bag_slide import SlideArrays, SlideSpec, make_slide, make_world

__all__ = ["PRESETS", "BagSynthConfig", "generate_bags", "make_config", "classification_cohort"]

_COHORT_KEY = 0x5EED_0003


def classification_cohort(cfg: BagSynthConfig, seed: int) -> list[SlideSpec]:
    """Slide specs per split with the configured class counts; labels shuffled within a split."""
    specs = []
    rng = np.random.default_rng(np.random.SeedSequence([seed, _COHORT_KEY]))
    for split, n_pos, n_neg in cfg.splits:
        labels = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)])
        annotated = rng.random(labels.size) < cfg.annotated_fraction
        for i, (label, ann) in enumerate(zip(labels, annotated, strict=True)):
            sid = f"{split}_{i + 1:03d}"
            specs.append(SlideSpec(sid, int(label), split, bool(ann or label == 0), sid))
    return specs


def generate_bags(
    out_dir: str | os.PathLike,
    preset: str = "camelyon16",
    seed: int = 0,
    *,
    workers: int = 1,
    **overrides: Any,
) -> Path:
    """Generate a synthetic cohort into ``out_dir`` and return the manifest path.

    ``overrides`` are :class:`BagSynthConfig` fields (e.g. ``signal=1.5, feature_dim=256``);
    ``workers`` > 1 generates slides in parallel processes. Deterministic in ``seed``.
    """
    from histomil.executors import BatchError, ExecutorConfig, Task, run_tasks

    cfg = make_config(preset, **overrides)
    out = Path(out_dir)
    (out / "bags").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cases: dict[str, dict] = {}
    if cfg.task == "survival":
        from histomil.synth.survival import survival_cohort

        specs, cases = survival_cohort(cfg, seed)
    else:
        specs = classification_cohort(cfg, seed)
    tasks = [
        Task(s.slide_id, write_synthetic_slide, dict(out_dir=out, cfg=cfg, spec=s, seed=seed))
        for s in specs
    ]
    results = run_tasks(tasks, ExecutorConfig(workers=workers), description="synthetic bags")
    failed = [r for r in results if not r.ok]
    if failed:
        raise BatchError(f"{len(failed)} synthetic bag(s) failed; first: {failed[0].error}")
    rows = [r.value for r in results]
    manifest = pd.DataFrame(rows)
    if cases:
        manifest["time"] = [cases[c]["time"] for c in manifest["case_id"]]
        manifest["event"] = [cases[c]["event"] for c in manifest["case_id"]]
        manifest["label"] = _time_bin_labels(manifest, cases)
    columns = ["slide_id", "label", "split", "case_id", "annotation_path"]
    columns += ["time", "event"] if cases else []
    stats_cols = [c for c in manifest.columns if c not in columns]
    manifest_path = out / "manifest.csv"
    atomic_write_text(manifest_path, manifest[columns].to_csv(index=False))
    summary = _summary(cfg, preset, seed, manifest, stats_cols, cases)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    summary["bytes_on_disk"] = sum(
        (out / "bags" / f"{sid}.h5").stat().st_size for sid in manifest["slide_id"]
    )
    atomic_write_json(out / "synth.json", summary)
    return manifest_path


def write_synthetic_slide(out_dir: Path, cfg: BagSynthConfig, spec: SlideSpec, seed: int) -> dict:
    """Generate and write one slide; returns its manifest row plus statistics."""
    from histomil import __version__

    world = make_world(cfg, seed)
    arr = make_slide(cfg, world, spec, seed)
    attrs = {
        "patch_size": cfg.patch_size,
        "patch_size_level0": cfg.patch_size_level0,
        "level0_mpp": cfg.level0_mpp,
        "target_mpp": cfg.target_mpp,
        "encoder": "synthetic",
        "feature_dim": cfg.feature_dim,
        "histomil_version": __version__,
        "synthetic_seed": seed,
        "slide_label": spec.label,
        "annotated": bool(spec.label == 0 or spec.annotated),
    }
    write_bag_arrays(out_dir / "bags" / f"{spec.slide_id}.h5", arr, attrs, cfg.dtype)
    ann_path = None
    if cfg.write_annotations and spec.annotated and spec.label == 1:
        ann_path = f"annotations/{spec.slide_id}.geojson"
        atomic_write_text(out_dir / ann_path, json.dumps(geojson_polygons(arr.annotation)))
    n = arr.features.shape[0]
    return {
        "slide_id": spec.slide_id,
        "label": spec.label,
        "split": spec.split,
        "case_id": spec.case_id or spec.slide_id,
        "annotation_path": ann_path,
        "n_patches": n,
        "lesion_share": float((arr.true_overlap > 0.5).mean()),
        "lesion_patches": int((arr.patch_labels == 1).sum()),
        "distractor_share": float(arr.distractor.mean()),
    }


def write_bag_arrays(path: Path, arr: SlideArrays, attrs: dict, dtype: str) -> None:
    """Write one bag (atomically) with :func:`histomil.bags.io.write_bag`, then add the
    synthetic ground truth ``true_overlap`` (N,) float32 and ``distractor`` (N,) int8."""
    import h5py

    from histomil.bags.io import write_bag

    with atomic_path(path) as tmp:
        write_bag(
            tmp,
            arr.features,
            arr.coords,
            patch_labels=arr.patch_labels,
            overlap=arr.overlap,
            tissue=arr.tissue,
            attn_target=arr.attn_target,
            attrs=attrs,
            dtype=dtype,
        )
        with h5py.File(tmp, "a") as f:
            f.create_dataset("true_overlap", data=arr.true_overlap.astype(np.float32))
            f.create_dataset("distractor", data=arr.distractor.astype(np.int8))


def _time_bin_labels(manifest: pd.DataFrame, cases: dict[str, dict]) -> list[int]:
    """Discrete time bin (quantiles of uncensored case times, 4 bins) as the manifest label."""
    times = np.array([c["time"] for c in cases.values()])
    events = np.array([c["event"] for c in cases.values()], bool)
    edges = np.quantile(times[events], [0.25, 0.5, 0.75]) if events.any() else np.array([])
    return [int(np.searchsorted(edges, t, side="right")) for t in manifest["time"]]


def _summary(
    cfg: BagSynthConfig,
    preset: str,
    seed: int,
    manifest: pd.DataFrame,
    stats_cols: list[str],
    cases: dict[str, dict],
) -> dict:
    from histomil import __version__

    pos = manifest[manifest["label"] == 1] if not cases else manifest
    counts = {
        split: {
            "slides": int((manifest["split"] == split).sum()),
            "positive": int(((manifest["split"] == split) & (manifest["label"] == 1)).sum()),
        }
        for split in ("train", "val", "test")
    }
    if cases:
        counts = {
            split: {
                "slides": int((manifest["split"] == split).sum()),
                "cases": int(manifest.loc[manifest["split"] == split, "case_id"].nunique()),
            }
            for split in ("train", "val", "test")
        }
    q = [0.0, 0.1, 0.5, 0.9, 1.0]
    stats = {
        "n_slides": len(manifest),
        "n_patches_quantiles_0_10_50_90_100": manifest["n_patches"].quantile(q).tolist(),
        "lesion_share_positive_quantiles": pos["lesion_share"].quantile(q).round(5).tolist(),
        "lesion_patches_positive_quantiles": pos["lesion_patches"].quantile(q).tolist(),
        "distractor_share_mean": float(manifest["distractor_share"].mean()),
    }
    if cases:
        stats["n_cases"] = len(cases)
        stats["censored_share"] = float(np.mean([c["event"] == 0 for c in cases.values()]))
    config = dataclasses.asdict(cfg)
    return {
        "preset": preset,
        "seed": seed,
        "config": config,
        "counts": counts,
        "stats": stats,
        "stats_columns": stats_cols,
        "histomil_version": __version__,
        "per_slide": manifest[["slide_id", *stats_cols]].to_dict(orient="records"),
    }
