"""Forward+backward time and peak memory per bag for every MIL model (CPU).

Usage: ``python benchmarks/bench_models.py [--sizes 8000 50000] [--reps 3] [--threads 2]``.

Every (model, N) point runs in a fresh subprocess so that its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, a high-water mark) belongs to that point
alone. Reported memory = peak RSS minus the RSS just before the first forward pass (model and
the (N, 1024) bag already in memory), i.e. what one forward+backward pass adds on top.
Time = median over ``reps`` timed forward+backward passes after one warm-up pass, in training
mode with a label (so CLAM's and DTFD's label-dependent losses are included). Ratios are
against AB-MIL measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

D = 1024


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_bag_inputs(n: int, d: int = D, seed: int = 0):
    """(features (N, D), grid coords (N, 2) in level-0 px, label (1,)) of a random bag."""
    import torch

    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    side = int(n**0.5) + 1
    idx = torch.arange(n)
    coords = torch.stack([idx % side, idx // side], -1).float() * 256
    return x, coords, torch.tensor([1.0])


def model_step(model, x, coords, label) -> None:
    """One forward+backward pass in training mode with a label (CLAM/DTFD losses included)."""
    out = model(x, coords=coords, label=label)
    loss = out.logits.sum() + (out.aux_loss if out.aux_loss is not None else 0.0)
    loss.backward()
    model.zero_grad(set_to_none=True)


def peak_point(step, reps: int) -> tuple[float, float]:
    """(median seconds of ``reps`` timed calls after one warm-up, peak extra RSS in MiB).

    Peak = the process's RSS high-water mark minus the RSS before the warm-up (inputs and
    model already allocated); ``reps = 0`` measures the warm-up only (time = its duration).
    """
    import resource

    before = _rss_mb()
    t0 = time.perf_counter()
    step()  # warm-up
    warm = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return (statistics.median(times) if times else warm), peak - before


def run_point(name: str, n: int, reps: int, threads: int) -> dict:
    """Measure one (model, N) point in this process; returns a JSON-able dict."""
    import torch

    from histomil.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name, D, 1).train()
    params = sum(p.numel() for p in model.parameters())
    x, coords, label = make_bag_inputs(n)
    seconds, peak = peak_point(lambda: model_step(model, x, coords, label), reps)
    return {"model": name, "n": n, "params": params, "time": seconds, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8000, 50000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--point", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(run_point(args.point[0], int(args.point[1]), args.reps, args.threads)))
        return
    from histomil.models import names

    models = args.models or names()
    if "abmil" in models:
        models = ["abmil"] + [m for m in models if m != "abmil"]
    rows = []
    for n in args.sizes:
        for name in models:
            cmd = [
                sys.executable,
                __file__,
                "--point",
                name,
                str(n),
                "--reps",
                str(args.reps),
                "--threads",
                str(args.threads),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(
                    f"{name} N={n} failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr
                )
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(
                f"# {name} N={n}: {rows[-1]['time']:.3f} s, {rows[-1]['peak_mb']:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    base = {r["n"]: r for r in rows if r["model"] == "abmil"}
    print(
        "| model | params (1024-d, 1 logit) | N | fwd+bwd (s) | x AB-MIL | peak extra memory (MiB) | x AB-MIL |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b = base.get(r["n"])
        tr = f"{r['time'] / b['time']:.2f}" if b else "-"
        mr = f"{r['peak_mb'] / b['peak_mb']:.2f}" if b and b["peak_mb"] > 0 else "-"
        print(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['n']:,} | {r['time']:.3f} | {tr} | "
            f"{r['peak_mb']:.0f} | {mr} |"
        )


if __name__ == "__main__":
    main()
