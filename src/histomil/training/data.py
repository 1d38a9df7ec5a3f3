"""Fold data: load the cohort, apply the paper's data regimes to training slides, survival bins.

Label regimes touch *training* slides only (validation/test keep the annotated labels, which
localization metrics use):

- ``labels_dir``: patch labels (and overlaps) from re-labelled bag/label files
  ``<labels_dir>/<slide_id>.h5`` (e.g. ``histomil label --padding-px``), the exact way to vary
  annotation granularity;
- ``min_overlap``: re-threshold ``patch_labels = overlap > min_overlap`` on annotated slides;
- ``padding_px``: simulated coarse annotation when only patch overlaps are stored: the lesion
  patch set is dilated on the coords grid by ``round(padding_px / patch_size_level0)`` patches
  (Chebyshev neighbourhood, i.e. a square structuring element). ``patch_size_level0`` comes from
  the config, else the bag's grid pitch (:func:`histomil.bags.io.grid_pitch`);
- ``annotated_fraction``: keep lesion labels on this share of the annotated positive training
  slides (seeded); the others become unknown (-1) and lose their attention target.

Survival: the slides of a ``case_id`` are concatenated into one patient bag; each slide's
coords are shifted along x past the previous slide's extent (slides side by side), so coordinates
stay unique for spatial models. ``label`` of a survival bag is its time-bin index.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from histomil.annotations.overlap import attention_target_from_labels, dilate_labels
from histomil.bags.bag import UNKNOWN, Bag
from histomil.bags.io import BagError, grid_pitch
from histomil.bags.stream import materialize
from histomil.training.config import DataConfig


def load_cohort_bags(manifest_df, bags_dir: str) -> dict[str, Bag]:
    """All bags of the manifest (``histomil.bags.dataset.load_cohort``): in memory as stored
    (float16 files stay float16) when they fit the memory budget, else streamed from disk."""
    from histomil.bags.dataset import load_cohort

    return load_cohort(manifest_df, bags_dir, half="auto", stream=None)


def _is_annotated(bag: Bag) -> bool:
    return bag.patch_labels is not None and bool((bag.patch_labels >= 0).any())


def _relabel_from_file(bag: Bag, labels_dir: str) -> Bag:
    import h5py

    path = Path(labels_dir) / f"{bag.slide_id}.h5"
    if not path.is_file():
        raise FileNotFoundError(f"data.labels_dir: no label file {path} for slide {bag.slide_id}")
    with h5py.File(path, "r") as f:
        labels = torch.from_numpy(np.asarray(f["patch_labels"]).astype(np.int8))
        overlap = torch.from_numpy(np.asarray(f["overlap"])) if "overlap" in f else bag.overlap
    if labels.shape[0] != bag.n_instances:
        raise ValueError(f"{path}: {labels.shape[0]} labels for {bag.n_instances} patches")
    return replace(bag, patch_labels=labels, overlap=overlap)


def relabel(bag: Bag, cfg: DataConfig) -> Bag:
    """Apply ``labels_dir`` / ``min_overlap`` / ``padding_px`` to one training bag."""
    changed = False
    if cfg.labels_dir is not None:
        bag, changed = _relabel_from_file(bag, cfg.labels_dir), True
    if not _is_annotated(bag):
        return bag
    labels = bag.patch_labels
    if cfg.min_overlap is not None and bag.overlap is not None and int(bag.label) != 0:
        known = labels >= 0
        above = torch.nan_to_num(bag.overlap.float()) > cfg.min_overlap
        labels = torch.where(known, above.to(labels.dtype), labels)
        changed = True
    if cfg.padding_px > 0 and bag.coords is not None:
        pitch = _pitch_or_one(bag.coords)  # one position: nothing to dilate, any pitch works
        radius = int(round(cfg.padding_px / (cfg.patch_size_level0 or pitch)))
        labels = dilate_labels(labels, bag.coords, radius, pitch)
        changed = True
    if not changed:
        return bag
    # a dilated lesion has no overlap values: its target is uniform over the lesion patches
    overlap = bag.overlap if cfg.padding_px <= 0 else None
    return replace(
        bag, patch_labels=labels, attn_target=attention_target_from_labels(labels, overlap)
    )


def hide_annotations(bag: Bag) -> Bag:
    """The bag as if its slide had not been annotated (labels unknown, no target)."""
    if bag.patch_labels is None:
        return bag
    return replace(bag, patch_labels=torch.full_like(bag.patch_labels, UNKNOWN), attn_target=None)


def with_attention_target(bag: Bag) -> Bag:
    """Fill ``attn_target`` from labels/overlap when the bag file did not store one."""
    if bag.attn_target is not None or int(bag.label) == 0:
        return bag
    return replace(bag, attn_target=attention_target_from_labels(bag.patch_labels, bag.overlap))


def prepare_train_bags(bags: list[Bag], cfg: DataConfig, seed: int) -> list[Bag]:
    """Training-slide label regimes (relabel, then keep a share of annotated positives)."""
    bags = [with_attention_target(relabel(b, cfg)) for b in bags]
    if cfg.annotated_fraction >= 1.0:
        return bags
    annotated = [b.slide_id for b in bags if int(b.label) != 0 and b.has_lesion_labels]
    rng = np.random.default_rng(seed)
    n_keep = int(round(cfg.annotated_fraction * len(annotated)))
    keep = set(rng.choice(annotated, size=n_keep, replace=False).tolist()) if n_keep else set()
    return [b if (b.slide_id in keep or int(b.label) == 0) else hide_annotations(b) for b in bags]


def patient_bags(bags: dict[str, Bag]) -> tuple[dict[str, Bag], dict[str, list[str]]]:
    """Concatenate slides per ``case_id`` into one bag (id = case id); returns (bags, members)."""
    by_case: dict[str, list[Bag]] = {}
    for bag in bags.values():
        by_case.setdefault(bag.case_id or bag.slide_id, []).append(bag)
    merged: dict[str, Bag] = {}
    members: dict[str, list[str]] = {}
    for case, group in sorted(by_case.items()):
        group = sorted(group, key=lambda b: b.slide_id)
        members[case] = [b.slide_id for b in group]
        merged[case] = group[0] if len(group) == 1 else _concat(case, group)
        if len(group) == 1:
            merged[case] = replace(group[0], slide_id=case)
    return merged, members


def _cat(parts):
    return None if any(p is None for p in parts) else torch.cat(parts)


def _concat(case: str, group: list[Bag]) -> Bag:
    coords = None
    if all(b.coords is not None for b in group):
        shifted, offset = [], 0
        for b in group:
            c = b.coords.clone().long()
            c[:, 0] += offset - int(c[:, 0].min())
            offset = int(c[:, 0].max()) + 2 * _pitch_or_one(b.coords)
            shifted.append(c)
        coords = torch.cat(shifted)
    first = group[0]
    return Bag(
        slide_id=case,
        features=torch.cat([materialize(b).features.float() for b in group]),
        label=first.label,
        coords=coords,
        patch_labels=_cat([b.patch_labels for b in group]),
        overlap=_cat([b.overlap for b in group]),
        attn_target=None,
        time=first.time,
        event=first.event,
        case_id=case,
    )


def _pitch_or_one(coords: torch.Tensor) -> int:
    """:func:`histomil.bags.io.grid_pitch`, 1 for a bag with one patch position."""
    try:
        return grid_pitch(coords)
    except BagError:
        return 1


def set_time_bins(bags: list[Bag], edges: np.ndarray) -> list[Bag]:
    """Survival: ``label`` = time-bin index of each bag given bin ``edges`` (training-only)."""
    from histomil.training.metrics import discretize_times

    times = np.array([float(b.time) for b in bags])
    bins = discretize_times(times, edges)
    return [replace(b, label=int(k)) for b, k in zip(bags, bins, strict=True)]
