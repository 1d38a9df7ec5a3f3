"""Tissue-mask quality and per-slide time, before vs after a code change, on slides with known truth.

Synthetic slides are generated twice from the same seeds, without and with pen marks (blue, green
and black ink strokes, marker dots, dust: ``SlideSynthConfig(pen_marks=True)``; the tissue is the same
in both). Each code version (``--before`` a git revision, default the branch point of issue 20;
``after`` = this tree) runs ``preprocess_slide`` in its own subprocess with its ``src`` first on
``PYTHONPATH``, once per segmentation method. From its outputs (tissue GeoJSON, patch file) we
measure against the truth masks rasterised from the slide layout:

- mask IoU and recall: the tissue polygons rasterised at the evaluation grid vs the true tissue
  (tissue and faint tissue not under ink); ``ink in mask``: share of ink pixels inside the mask;
- patches: how many are kept, the share of kept patches that are mostly ink (> 50 % of the
  patch), and patch recall (share of patches with >= 50 % true tissue that are kept);
- the real slide (``--real``): IoU of each mask with the before-default mask (no truth there).

    python benchmarks/bench_preprocess_masks.py [--n 6] [--size 4000x3000] [--mpp 0.5]
        [--before 7fd6ca3] [--workdir DIR] [--real ../shared/data/slides/CMU-1-Small-Region.svs]

Prints Markdown tables (means over slides) and writes ``masks_<version>_<method>_<slide>.png``
overviews into the work directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
BEFORE = "7fd6ca3"  # the commit issue 20 branched from (segmentation on a resized thumbnail)
EVAL_SIDE = 1000  # evaluation grid, longest side in px

RUN = """
import json, sys, time
from pathlib import Path
from histomil.slides.preprocess import PreprocessConfig, SlideInput, preprocess_slide
from histomil.slides.tissue import SegmentationConfig
path, out, method, sid = sys.argv[1:5]
cfg = PreprocessConfig(segmentation=SegmentationConfig(method=method))
t = time.perf_counter()
row = preprocess_slide(SlideInput(sid, Path(path)), out, cfg)
print(json.dumps({"seconds": time.perf_counter() - t, **row}))
"""


def _before_src(rev: str, work: Path) -> Path:
    dest = work / f"src_{rev}"
    if not dest.is_dir():
        dest.mkdir(parents=True)
        repo = SRC.parent
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", rev, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def _run(src: Path, slide: Path, out: Path, method: str, sid: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run(
        [sys.executable, "-c", RUN, str(slide), str(out), method, sid],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode:
        raise RuntimeError(f"{src} {method} {slide}: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _raster(geojson: Path, dims: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    from skimage.draw import polygon as draw_polygon

    out = np.zeros(shape, dtype=bool)
    sy, sx = shape[0] / dims[1], shape[1] / dims[0]
    for feat in json.loads(geojson.read_text())["features"]:
        geom = feat["geometry"]
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for rings in polys:
            for i, ring in enumerate(rings):
                xy = np.asarray(ring)
                rr, cc = draw_polygon(xy[:, 1] * sy - 0.5, xy[:, 0] * sx - 0.5, shape)
                out[rr, cc] = i == 0
    return out


def _fractions(mask: np.ndarray, coords: np.ndarray, size0: int, dims) -> np.ndarray:
    from histomil.slides.tiling import tissue_fractions

    return tissue_fractions(mask, coords, size0, dims)


def _evaluate(out: Path, sid: str, truth: dict, dims) -> dict:
    import h5py

    from histomil.slides.tiling import grid_coords

    shape = truth["tissue"].shape
    mask = _raster(out / "tissue" / f"{sid}.geojson", dims, shape)
    tissue, ink = truth["tissue"], truth["ink"]
    with h5py.File(out / "patches" / f"{sid}.h5", "r") as h5:
        coords, size0 = h5["coords"][:], int(h5.attrs["patch_size_level0"])
    ink_frac = _fractions(ink, coords, size0, dims)
    grid = grid_coords(dims, size0)
    true_frac = _fractions(tissue, grid, size0, dims)
    wanted = {tuple(c) for c in grid[true_frac >= 0.5]}
    kept = {tuple(c) for c in coords}
    return {
        "iou": (mask & tissue).sum() / max(1, (mask | tissue).sum()),
        "recall": (mask & tissue).sum() / max(1, tissue.sum()),
        "ink_in_mask": (mask & ink).sum() / max(1, ink.sum()) if ink.any() else float("nan"),
        "patches": len(coords),
        "ink_patches": float((ink_frac > 0.5).mean()) if len(coords) else 0.0,
        "patch_recall": len(wanted & kept) / max(1, len(wanted)),
    }


def resolution_study(n: int, size0: int = 448, dims=(40000, 30000)) -> None:
    """How many mask px per patch side tissue fractions need: the true tissue of ``n`` random
    CAMELYON-size layouts rasterised at k px per patch side vs at 64 (the reference)."""
    from histomil.slides.tiling import grid_coords
    from histomil.synth.slide_layout import layout_masks, make_layout

    grid = grid_coords(dims, size0)
    ks = (4, 8, 11, 16, 22, 32)
    stats: dict[int, list] = {k: [] for k in ks}
    for seed in range(n):
        layout = make_layout(np.random.default_rng([seed, 1]), dims, seed % 2 == 0)

        def fractions(k: float, layout=layout) -> np.ndarray:
            shape = (round(dims[1] / size0 * k), round(dims[0] / size0 * k))
            return _fractions(layout_masks(layout, shape)["tissue"], grid, size0, dims)

        ref = fractions(64)
        edge = (ref > 0) & (ref < 1)  # patches on a tissue border, where the error lives
        for k in ks:
            f = fractions(k)
            err = np.abs(f - ref)[edge]
            flips = ((f >= 0.05) != (ref >= 0.05)).sum() / max(1, (ref >= 0.05).sum())
            stats[k].append((err.mean(), np.percentile(err, 99), flips))
    print(f"\nmask resolution: {n} CAMELYON-size layouts, {len(grid)} grid patches of {size0} px;"
          " tissue fractions vs a 64 px/patch-side reference (border patches)\n")  # fmt: skip
    print("| mask px per patch side | mean abs error | 99th pct error | keep decisions (>= 5 %) "
          "changed, share of kept |\n|---|---|---|---|")  # fmt: skip
    for k in ks:
        a = np.mean(stats[k], axis=0)
        print(f"| {k} | {a[0]:.4f} | {a[1]:.3f} | {a[2]:.2%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--real", type=Path, default=None)
    parser.add_argument("--resolution-layouts", type=int, default=0, help="See resolution_study.")
    args = parser.parse_args()
    sys.path.insert(0, str(SRC))
    if args.resolution_layouts:
        resolution_study(args.resolution_layouts)
        return
    from histomil.synth.slide_layout import layout_masks
    from histomil.synth.slides import SlideSynthConfig, parse_size, write_synthetic_slide

    work = args.workdir or Path(tempfile.mkdtemp(prefix="histomil-masks-"))
    work.mkdir(parents=True, exist_ok=True)
    size = parse_size(args.size)
    shape = (round(EVAL_SIDE * size[1] / max(size)), round(EVAL_SIDE * size[0] / max(size)))
    versions = {"before": _before_src(args.before, work), "after": SRC}
    methods = {"before": ("otsu", "saturation"), "after": ("saturation", "otsu")}
    results: dict[tuple, list[dict]] = {}
    for i in range(args.n):
        for pen in (False, True):
            sid = f"s{i}_{'pen' if pen else 'clean'}"
            path = work / f"{sid}.tif"
            config = SlideSynthConfig(size=size, mpp=args.mpp, pen_marks=pen)
            made = write_synthetic_slide(path, config, seed=1000 + i, positive=i % 2 == 0)
            truth = layout_masks(made.layout, shape)
            for version, src in versions.items():
                for method in methods[version]:
                    out = work / f"out_{version}_{method}"
                    timing = _run(src, path, out, method, sid)
                    row = _evaluate(out, sid, truth, size)
                    row["seconds"] = timing["seconds"]
                    results.setdefault((pen, version, method), []).append(row)
            print(f"done {sid}", file=sys.stderr)
    print(f"\n{args.n} slides of {size[0]} x {size[1]} px at {args.mpp} um/px, each without and "
          f"with pen marks; before = {args.before}, after = this tree; evaluation grid "
          f"{shape[1]} x {shape[0]}\n")  # fmt: skip
    keys = ("iou", "recall", "ink_in_mask", "patches", "ink_patches", "patch_recall", "seconds")
    print("| slides | version | segmentation | " + " | ".join(keys) + " |")
    print("|---" * (3 + len(keys)) + "|")
    for (pen, version, method), rows in results.items():
        vals = [np.nanmean([r[k] for r in rows]) if rows else float("nan") for k in keys]
        text = [
            f"{v:.0f}" if k == "patches" else f"{v:.3f}" for k, v in zip(keys, vals, strict=True)
        ]
        print(f"| {'pen' if pen else 'clean'} | {version} | {method} | " + " | ".join(text) + " |")
    if args.real:
        _real(args.real, versions, methods, work)


def _real(real: Path, versions: dict, methods: dict, work: Path) -> None:
    from histomil.slides import open_slide

    with open_slide(real) as s:
        dims = s.dimensions
    shape = (round(EVAL_SIDE * dims[1] / max(dims)), round(EVAL_SIDE * dims[0] / max(dims)))
    masks = {}
    for version, src in versions.items():
        for method in methods[version]:
            out = work / f"real_{version}_{method}"
            timing = _run(src, real, out, method, real.stem)
            masks[(version, method)] = _raster(out / "tissue" / f"{real.stem}.geojson", dims, shape)
            masks[(version, method, "n")] = timing["n_patches"]
    ref = masks[("before", "otsu")]
    print(f"\nreal slide {real.name} ({dims[0]} x {dims[1]}): IoU with the before-default mask\n")
    print("| version | segmentation | IoU vs before otsu | tissue share | patches |")
    print("|---|---|---|---|---|")
    for version in versions:
        for method in methods[version]:
            m = masks[(version, method)]
            iou = (m & ref).sum() / max(1, (m | ref).sum())
            n = masks[(version, method, "n")]
            print(f"| {version} | {method} | {iou:.3f} | {m.mean():.3f} | {n} |")


if __name__ == "__main__":
    main()
