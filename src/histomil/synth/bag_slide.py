"""One synthetic slide: feature world shared by a cohort, and per-slide arrays.

The *world* (tissue-type prototypes, lesion, grade and distractor directions) comes from the
master seed; a slide's content comes only from ``(master seed, slide_id)`` and its spec, so a
slide never depends on the other slides of the cohort.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from histomil.synth.bag_config import BagSynthConfig
from histomil.synth.bag_grid import (
    Blob,
    jittered,
    overlap_fraction,
    place_blobs,
    tissue_grid,
    voronoi_regions,
)

_WORLD_KEY = 0x5EED_0001


@dataclass(frozen=True)
class World:
    """Directions shared by every slide of a cohort (all unit vectors of length D)."""

    tissue_protos: np.ndarray  # (K, D) float32 tissue-type means
    lesion_dir: np.ndarray  # (D,) class evidence
    grade_dir: np.ndarray  # (D,) aggressiveness (survival), orthogonal to lesion_dir
    distractor_dirs: np.ndarray  # (M, D) salient, cosine distractor_lesion_cos to lesion_dir


@dataclass(frozen=True)
class SlideSpec:
    """What a slide must contain; ``lesion_share`` None = draw from the config's distribution."""

    slide_id: str
    label: int
    split: str
    annotated: bool = True
    case_id: str | None = None
    lesion_share: float | None = None
    grade: float = 0.0


@dataclass(frozen=True)
class SlideArrays:
    """Arrays of one bag; N patches, D features."""

    features: np.ndarray  # (N, D) float32
    coords: np.ndarray  # (N, 2) int64
    tissue: np.ndarray  # (N,) float32
    patch_labels: np.ndarray  # (N,) int8: 1 lesion, 0 non-lesion, -1 unknown
    overlap: np.ndarray  # (N,) float32 annotated lesion fraction; NaN when unannotated
    attn_target: np.ndarray  # (N,) float32, sums to 1 on annotated positive slides
    true_overlap: np.ndarray  # (N,) float32 ground-truth lesion fraction (synthetic only)
    distractor: np.ndarray  # (N,) int8 1 on salient distractor patches
    annotation: list[Blob]  # annotated lesion shapes (level-0 px)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def make_world(cfg: BagSynthConfig, seed: int) -> World:
    """The cohort's shared feature geometry, from the master ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _WORLD_KEY]))
    d = cfg.feature_dim
    protos = rng.standard_normal((cfg.n_tissue_types, d)) * cfg.tissue_type_scale
    q, _ = np.linalg.qr(rng.standard_normal((d, 2 + cfg.n_distractor_types)))
    lesion, grade, others = q[:, 0], q[:, 1], q[:, 2:].T
    c = cfg.distractor_lesion_cos
    distractors = c * lesion[None, :] + np.sqrt(1.0 - c**2) * others
    return World(
        protos.astype(np.float32),
        lesion.astype(np.float32),
        grade.astype(np.float32),
        distractors.astype(np.float32),
    )


def slide_rng(seed: int, slide_id: str) -> np.random.Generator:
    """Generator for one slide, derived from the master seed and the slide id only."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(slide_id.encode())]))


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * np.exp(sigma * rng.standard_normal()))


def make_slide(cfg: BagSynthConfig, world: World, spec: SlideSpec, seed: int) -> SlideArrays:
    """Generate one slide's arrays (deterministic in ``seed`` and ``spec``)."""
    rng = slide_rng(seed, spec.slide_id)
    px = cfg.patch_size_level0
    n = int(
        np.clip(
            round(_lognormal(rng, cfg.patches_median, cfg.patches_sigma)),
            cfg.patches_min,
            cfg.patches_max,
        )
    )
    coords, cells, tissue = tissue_grid(n, px, rng)
    d = cfg.feature_dim

    # background: spatially clustered tissue types + stain shift + isotropic noise
    lo, hi = cfg.regions_per_slide
    n_regions = int(rng.integers(lo, hi, endpoint=True))
    region = voronoi_regions(cells, n_regions, rng)
    region_type = rng.integers(0, cfg.n_tissue_types, n_regions)
    feats = rng.standard_normal((n, d), dtype=np.float32)
    feats += world.tissue_protos[region_type[region]]
    feats += (rng.standard_normal(d) * cfg.slide_shift_scale).astype(np.float32)

    # salient distractors, same distribution in both classes
    share_d = min(
        _lognormal(rng, cfg.distractor_share_median, cfg.distractor_share_sigma),
        cfg.distractor_share_max,
    )
    n_blobs = 1 + int(rng.poisson(1.0))
    distractor = np.zeros(n, np.int8)
    for blob in place_blobs(coords, px, share_d * n, n_blobs, 0.3, rng):
        hit = np.flatnonzero(overlap_fraction(coords, px, [blob]) >= 0.5)
        kind = int(rng.integers(0, world.distractor_dirs.shape[0]))
        strength = cfg.distractor_strength * rng.uniform(0.7, 1.3, hit.size).astype(np.float32)
        feats[hit] += strength[:, None] * world.distractor_dirs[kind]
        distractor[hit] = 1

    # lesions (positive slides): weak, noisy shift along a slide-specific lesion direction
    blobs: list[Blob] = []
    if spec.label == 1:
        share = spec.lesion_share
        if share is None:
            share = _lognormal(rng, cfg.lesion_share_median, cfg.lesion_share_sigma)
        share = float(np.clip(share, 1.0 / n, cfg.lesion_share_max))
        n_lesions = 1 + int(rng.poisson(cfg.lesions_extra_mean))
        blobs = place_blobs(coords, px, share * n, n_lesions, cfg.lesion_irregularity, rng)
    true_ov = overlap_fraction(coords, px, blobs)
    direction = world.lesion_dir + cfg.lesion_heterogeneity * _unit(rng.standard_normal(d))
    direction = _unit(direction).astype(np.float32)
    direction = direction + np.float32(cfg.grade_strength * spec.grade) * world.grade_dir
    idx = np.flatnonzero(true_ov > 0)
    jitter = 1.0 + cfg.signal_jitter * rng.standard_normal(idx.size)
    shift = (cfg.signal * true_ov[idx] * np.maximum(jitter, 0.0)).astype(np.float32)
    feats[idx] += shift[:, None] * direction

    # annotation: jittered boundaries, missed lesions, labels and targets derived from it
    annotation = [
        jittered(b, cfg.annotation_jitter_px, rng)
        for b in blobs
        if rng.random() >= cfg.annotation_miss_prob
    ]
    attn_target = np.zeros(n, np.float32)
    if spec.label == 1 and not spec.annotated:
        labels = np.full(n, -1, np.int8)
        overlap = np.full(n, np.nan, np.float32)  # unknown, as histomil.annotations writes
    else:
        overlap = overlap_fraction(coords, px, annotation)
        labels = (overlap > cfg.label_threshold).astype(np.int8)
        mass = overlap * tissue
        if spec.label == 1 and mass.sum() > 0:
            attn_target = (mass / mass.sum()).astype(np.float32)
    return SlideArrays(
        feats, coords, tissue, labels, overlap, attn_target, true_ov, distractor, annotation
    )
