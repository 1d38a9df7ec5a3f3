"""Batch throughput of preprocessing and extraction: 1 vs 2 local workers vs the Ray executor.

    python benchmarks/bench_scale.py [--slides 6] [--size 4000x3000] [--extract-slides 4]

Writes ``--slides`` synthetic pyramidal TIFFs once into ``--workdir`` (a temp folder by
default), then, in one run: ``preprocess_slides`` with the local executor and 1 and 2 worker
processes and with ``--executor ray`` on a local Ray instance of 2 CPUs (started before the
clock; its startup time is printed apart), every configuration into a fresh output folder;
then ``extract_dir`` (``resnet50_trunc``, random weights, CPU fp32; speed does not depend on
the weights) of the first ``--extract-slides`` patch files with 1 and 2 DataLoader reader
workers (local: slides one after another, the reader workers overlap reading with the
encoder) and on Ray (one task per slide, 2 tasks at a time). Ratios are against the first row of
each table. Every configuration must produce the same outputs; the script checks patch counts.
A slide that fails (e.g. a worker killed by the out-of-memory monitor of a shared machine) is
printed and left out of its row's slide and patch counts, so check the "slides" column.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from histomil.executors import ExecutorConfig


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def make_slides(folder: Path, n: int, size: str) -> Path:
    from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides, parse_size

    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        make_synthetic_slides(folder, n, seed=11, config=SlideSynthConfig(size=parse_size(size)))
    return folder / "slides"


def bench_preprocess(slides: Path, work: Path, configs: dict[str, ExecutorConfig]) -> list:
    from histomil.slides.preprocess import PreprocessConfig, preprocess_slides

    rows = []
    for name, ex in configs.items():
        out = work / f"pp_{name.replace(' ', '_')}"
        t0 = time.perf_counter()
        table = preprocess_slides([slides], out, PreprocessConfig(), ex, skip_errors=True)
        dt = time.perf_counter() - t0
        ok = table[table["status"] == "ok"]
        rows.append((name, len(ok), int(ok["n_patches"].sum()), dt))
        print(f"preprocess {name:10s} {dt:6.1f} s", flush=True)
    full = [r for r in rows if r[1] == rows[0][1]]
    assert len({r[2] for r in full}) == 1, "executors disagree on patch counts"
    return rows


def bench_extract(patches: Path, work: Path, n: int, configs: dict[str, tuple]) -> list:
    from histomil.features import ExtractConfig, WeightsSpec
    from histomil.features.extract import extract_dir

    sub = work / "patches_subset"
    sub.mkdir(exist_ok=True)
    for p in sorted(patches.glob("*.h5"))[:n]:
        if not (sub / p.name).exists():
            (sub / p.name).symlink_to(p.resolve())
    rows = []
    for name, (readers, ex) in configs.items():
        config = ExtractConfig(
            encoder="resnet50_trunc",
            weights=WeightsSpec(random=True, seed=0),
            batch_size=16,
            workers=readers,
            device="cpu",
            precision="fp32",
        )
        out = work / f"ex_{name.replace(' ', '_')}"
        t0 = time.perf_counter()
        result = extract_dir(sub, out, config, ex, skip_errors=True)
        dt = time.perf_counter() - t0
        done = [r for r in result if r["status"] == "done"]
        for r in result:
            if r["status"] != "done":
                print(f"  {name}: {r['slide_id']} {r['status']}: {str(r.get('error'))[:200]}")
        rows.append((name, len(done), int(sum(r["n_patches"] for r in done)), dt))
        print(f"extract {name:10s} {dt:6.1f} s", flush=True)
    return rows


def table(title: str, rows: list) -> None:
    base = rows[0][3]
    print(f"\n{title}\n")
    print("| configuration | slides | patches | seconds | patches/s | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, n, p, dt in rows:
        print(f"| {name} | {n} | {p} | {dt:.1f} | {p / dt:.1f} | {base / dt:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=int, default=6)
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--extract-slides", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    import ray

    work = args.workdir or Path(tempfile.mkdtemp(prefix="histomil-scale-"))
    slides = make_slides(work / "cohort", args.slides, args.size)
    print(f"workdir {work}\nload before: {_uptime()}")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init (local, 2 CPUs): {time.perf_counter() - t0:.1f} s")
    ray_ex = ExecutorConfig(executor="ray", workers=2)
    try:
        pp = bench_preprocess(
            slides,
            work,
            {
                "local 1": ExecutorConfig(workers=1),
                "local 2": ExecutorConfig(workers=2),
                "ray 2cpu": ray_ex,
            },
        )
        ex = bench_extract(
            work / "pp_local_1" / "patches",
            work,
            args.extract_slides,
            {
                "local, 1 reader": (1, ExecutorConfig()),
                "local, 2 readers": (2, ExecutorConfig()),
                "ray 2cpu, 1 reader/task": (1, ray_ex),
            },
        )
    finally:
        ray.shutdown()
    print(f"\nload after: {_uptime()}")
    table(f"Preprocessing {args.slides} slides of {args.size} px at 0.5 um/px", pp)
    table(f"Extraction (resnet50_trunc, CPU fp32) of {args.extract_slides} slides", ex)


if __name__ == "__main__":
    main()
