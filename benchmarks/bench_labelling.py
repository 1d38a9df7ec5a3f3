"""Labelling time: 100,000 patches against CAMELYON16 Tumor_009 (6 polygons, ~10,800 vertices).

Baseline measured in the same run: the naive per-patch loop (one ``box.intersection(region)``
per patch, as in most MIL repositories) on a random subsample, extrapolated to all patches.

    python benchmarks/bench_labelling.py [--patches 100000] [--naive-sample 2000]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import shapely

from histomil.annotations import patch_labels, read_annotations, region_overlap

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "annotations" / "camelyon16"
PATCH = 448  # 224 px at 20x = 448 level-0 px at 40x


def grid(ann, n_patches: int) -> np.ndarray:
    """A square grid of ~n_patches patches centred on the annotation's bounding box."""
    side = int(np.ceil(np.sqrt(n_patches)))
    x0, y0, x1, y1 = ann.bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    xs = cx - side * PATCH / 2 + np.arange(side) * PATCH
    ys = cy - side * PATCH / 2 + np.arange(side) * PATCH
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)[:n_patches].astype(np.int64)


def naive(coords: np.ndarray, region) -> np.ndarray:
    out = np.empty(len(coords))
    for i, (x, y) in enumerate(coords.tolist()):
        out[i] = shapely.box(x, y, x + PATCH, y + PATCH).intersection(region).area / PATCH**2
    return out


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("histomil").setLevel(logging.ERROR)  # CAMELYON polygons get repaired

    t_read, ann = best_of(lambda: read_annotations(DATA / "Tumor_009.xml"), args.repeats)
    coords = grid(ann, args.patches)
    n_vertices = shapely.get_num_coordinates(ann.lesion)
    print(f"Tumor_009: {ann.n_lesion} polygons, {n_vertices} vertices; {len(coords)} patches")
    print(f"read + repair XML: {t_read:.3f} s")
    rng = np.random.default_rng(0)
    sample = rng.choice(len(coords), size=min(args.naive_sample, len(coords)), replace=False)
    print(
        "| padding (level-0 px) | lesion patches | region build (s) | overlap (s) | "
        "histomil total (s) | naive total, extrapolated (s) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|")
    for padding in (0, 448, 2240):
        t_region, region = best_of(lambda p=padding: ann.region(p), args.repeats)
        t_overlap, overlap = best_of(
            lambda r=region: region_overlap(coords, PATCH, r), args.repeats
        )
        t_loop, ref = best_of(lambda r=region: naive(coords[sample], r), 1)
        np.testing.assert_allclose(overlap[sample], ref, atol=1e-6)
        t_fast = t_region + t_overlap
        t_naive = t_region + t_loop * len(coords) / len(sample)  # same region, per-patch loop
        n_lesion = int((patch_labels(overlap) == 1).sum())
        print(
            f"| {padding} | {n_lesion} | {t_region:.3f} | {t_overlap:.3f} | {t_fast:.3f} | "
            f"{t_naive:.1f} | {t_naive / t_fast:.1f}x |"
        )


if __name__ == "__main__":
    main()
