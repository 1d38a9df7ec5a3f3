"""Extraction throughput: the whole pipeline (slide reads in DataLoader workers + encoder + bag
write) against the encoder's forward pass alone on pre-made tensors of the same batch size,
measured in the same run, for 0/1/2 reader workers and fp32/bf16.

    python benchmarks/bench_extract.py [--encoder resnet50_trunc] [--patches 96] [--batch-size 32]

Uses the real slide in ../shared/data (random weights: speed does not depend on their values).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SLIDE = ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"


def write_patch_file(folder: Path, n: int) -> Path:
    """A patch file with the first ``n`` cells of the slide's 224-px level-0 grid."""
    from histomil.slides import TileSpec, grid_coords, open_slide

    with open_slide(SLIDE) as slide:
        spec = TileSpec.for_slide(slide, 224, float(slide.mpp))
        coords = grid_coords(slide.dimensions, spec.patch_size_level0)
    if len(coords) < n:
        coords = np.concatenate([coords] * (n // len(coords) + 1))
    coords = coords[:n]
    path = folder / "bench.h5"
    with h5py.File(path, "w") as f:
        f["coords"] = coords.astype(np.int64)
        f.attrs.update(slide_id="bench", slide_path=str(SLIDE), **spec.as_attrs())
    return path


def forward_rate(runner, batch_size: int, batches: int) -> float:
    """Patches/s of ``runner.forward`` on pre-made normalised channels-last tensors."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch_size, 3, 224, 224), dtype=torch.uint8, generator=gen)
    x = runner.prepare(x)
    runner.forward(x)  # warm-up (oneDNN primitive creation)
    start = time.perf_counter()
    for _ in range(batches):
        runner.forward(x)
    return batches * batch_size / (time.perf_counter() - start)


def pipeline_rate(patch_file: Path, out: Path, config) -> float:
    """Patches/s of extract_slide end to end (reads, encode, atomic bag write)."""
    from histomil.features import extract_slide

    row = extract_slide(patch_file, out, replace(config, overwrite=True))
    return row["n_patches"] / row["seconds"]


def main() -> None:
    from histomil.features import ExtractConfig, WeightsSpec
    from histomil.features.extract import get_runner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet50_trunc")
    parser.add_argument("--patches", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    args = parser.parse_args()
    if not SLIDE.is_file():
        raise SystemExit(f"real slide not found at {SLIDE}")
    warnings.filterwarnings("ignore", message=".*RANDOM weights")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, encoder {args.encoder}")
    print(f"{args.patches} patches of 224 px from {SLIDE.name}, batch {args.batch_size}\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        patch_file = write_patch_file(tmp, args.patches)
        for precision in args.precisions:
            base = ExtractConfig(
                encoder=args.encoder,
                weights=WeightsSpec(random=True),
                batch_size=args.batch_size,
                precision=precision,
                device="cpu",
                progress=False,
            )
            runner = get_runner(base)
            n_batches = max(1, args.patches // args.batch_size)
            for workers in args.workers:
                # The machine is shared: measure the forward pass right next to each pipeline
                # run (before and after) so both see the same load.
                fwd = forward_rate(runner, args.batch_size, n_batches)
                rate = pipeline_rate(patch_file, tmp / "out", replace(base, workers=workers))
                fwd = (fwd + forward_rate(runner, args.batch_size, n_batches)) / 2
                rows.append((precision, workers, rate, fwd))
    print("| precision | workers | pipeline patches/s | forward-only patches/s | ratio |")
    print("|---|---|---|---|---|")
    best = max(r[3] for r in rows)
    for precision, workers, rate, fwd in rows:
        print(f"| {precision} | {workers} | {rate:.1f} | {fwd:.1f} | {rate / fwd:.2f} |")
    top = max(rows, key=lambda r: r[2])
    print(
        f"\nbest pipeline: {top[2]:.1f} patches/s ({top[0]}, {top[1]} workers) = "
        f"{top[2] / best:.2f} x the fastest forward pass ({best:.1f} patches/s)"
    )


if __name__ == "__main__":
    main()
