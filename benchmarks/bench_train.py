"""Training seconds per epoch on a CAMELYON-sized cohort: histomil vs torchmil vs the FLOP floor.

Usage::

    histomil synth bags --preset camelyon16 ...   # or let --generate write the cohort
    python benchmarks/bench_train.py --cohort /tmp/c16 [--generate] [--rounds 2] [--threads 2]

Measured in one run, on the 216 training bags of the synthetic ``camelyon16`` preset
(~8,000 patches x 1024-d each, float16 on disk, kept in memory as float16 and computed in
float32), one bag per step, Adam, AB-MIL 1024->512 (ReLU), gated attention 128:

- ``histomil bag``: :func:`histomil.training.trainer.fit` with the ``bag`` objective (BCE);
- ``histomil rank``: the same with ``rank_induction`` (overhead ratio vs ``bag``);
- ``histomil bf16``: ``histomil bag`` with ``train.precision: bfloat16`` (autocast; opt-in);
- ``torchmil``: ``torchmil.models.ABMIL`` (same sizes, gated) with its ``compute_loss``;
- ``plain torch``: the same network written as three ``nn.Linear`` and a softmax, a bare loop;
- the floor: the FLOPs an epoch needs (forward, weight gradients, attention input gradients)
  divided by the best matrix-multiply rate measured on this CPU with the same threads.

Configurations are interleaved chunk by chunk (``--chunks`` slices of the epoch; every
configuration runs on a slice before the next slice starts), so background load from other jobs
hurts all of them alike; the epoch time of a configuration is the sum over slices (best over
``--rounds``). histomil's epoch is timed up to the end of its training pass (no validation). Dropout is 0 (torchmil has none);
``--dropout 0.25`` measures histomil's default instead (torchmil and plain torch unchanged).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

D, H, A = 1024, 512, 128


def flops_per_patch(d: int = D, h: int = H, a: int = A) -> float:
    """Multiply-add FLOPs (x2) per patch and step: forward, weight grads, attention input grads.

    fc (d->h): forward + weight grad (features need no grad): 2 * 2dh. Gated attention (V, U:
    h->a): forward + weight grad + input grad: 3 * 2 * 2ha. Scores, pooling, classifier and
    their gradients: about 3 * 2 * (a + 2h). Elementwise work (ReLU, tanh, sigmoid) is free.
    """
    return 4 * d * h + 12 * h * a + 6 * (a + 2 * h)


def gemm_epoch(train, dtype: torch.dtype = torch.float32) -> float:
    """Seconds for only the epoch's matrix multiplies (the floor), on buffers of each bag's size.

    Per bag: fc forward X W (N,D)x(D,H) and weight gradient G^T X; attention (V and U as one
    (H, 2A) GEMM) forward, weight gradient and input gradient. Measured over the same bags as an
    epoch, so it sees the same caches and the same background load.
    """
    n_max = max(b.n_instances for b in train)
    gen = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(D, H, generator=gen), torch.randn(H, 2 * A, generator=gen)
    g1, g2 = torch.randn(n_max, H, generator=gen), torch.randn(n_max, 2 * A, generator=gen)
    w1, w2, g1, g2 = (t.to(dtype) for t in (w1, w2, g1, g2))
    h = torch.empty(n_max, H, dtype=dtype)
    t0 = time.perf_counter()
    for bag in train:
        n = bag.n_instances
        x = bag.features.to(dtype)  # the trainer converts float16 the same way
        torch.mm(x, w1, out=h[:n])
        torch.mm(g1[:n].t(), x)  # (H, D) fc weight gradient
        torch.mm(h[:n], w2)  # (N, 2A)
        torch.mm(h[:n].t(), g2[:n])  # (H, 2A) attention weight gradient
        torch.mm(g2[:n], w2.t())  # (N, H) attention input gradient
    return time.perf_counter() - t0


def load_train_bags(cohort: Path, limit: int | None):
    """The cohort's training bags in memory (float16 features, as the trainer keeps them)."""
    from histomil.bags.dataset import load_cohort

    df = pd.read_csv(cohort / "manifest.csv", dtype={"slide_id": str})
    train = df[df["split"] == "train"]
    val = df[df["split"] == "val"].head(2)
    if limit:  # a stratified-ish subset: the first rows mix both classes
        train = train.head(limit)
    bags = load_cohort(pd.concat([train, val]), cohort, half=True)
    return [bags[s] for s in train["slide_id"]], [bags[s] for s in val["slide_id"]]


class _EpochDone(Exception):
    pass


def epoch_histomil(
    train, val, objective_name: str, dropout: float, seed: int, precision: str = "float32"
) -> float:
    """One training epoch of the real trainer (:func:`fit`), stopped before any validation."""
    from histomil.models import create_model
    from histomil.objectives import TrainContext, create_objective
    from histomil.training.config import TrainSettings
    from histomil.training.trainer import fit, seed_everything

    seed_everything(seed)
    model = create_model("abmil", D, 1, hidden=H, attn_dim=A, gated=True, dropout=dropout)
    objective = create_objective(objective_name)
    objective.setup(model, TrainContext(0, "classification", 1, "", seed))
    settings = TrainSettings(
        max_epochs=2, warmup_epochs=1, patience=1, eval_every=2, precision=precision
    )
    done = []

    def stop(row):  # epoch 0 ends without validation (eval_every=2): stop the clock here
        done.append(time.perf_counter())
        raise _EpochDone

    t0 = time.perf_counter()
    try:
        fit(model, objective, train, val, settings, "classification", seed, stop)
    except _EpochDone:
        pass
    return done[0] - t0


def epoch_torchmil(train, seed: int) -> float:
    from torchmil.models import ABMIL

    torch.manual_seed(seed)
    feat = nn.Sequential(nn.Linear(D, H), nn.ReLU())
    model = ABMIL(in_shape=(D,), att_dim=A, gated=True, feat_ext=feat)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    model.train()
    t0 = time.perf_counter()
    for i in order:
        bag = train[i]
        x = bag.features.float()[None]  # (1, N, D)
        y = torch.tensor([float(bag.label)])
        _, losses = model.compute_loss(y, x)
        opt.zero_grad()
        losses["BCEWithLogitsLoss"].backward()
        opt.step()
    return time.perf_counter() - t0


class PlainABMIL(nn.Module):
    """The same network as a minimal hand-written module (reference for framework overhead)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.v, self.u = nn.Linear(D, H), nn.Linear(H, A), nn.Linear(H, A)
        self.w, self.cls = nn.Linear(A, 1), nn.Linear(H, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (N, D) -> (1,)
        h = torch.relu(self.fc(x))  # (N, H)
        s = self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h)))  # (N, 1)
        z = torch.softmax(s, dim=0).t() @ h  # (1, H)
        return self.cls(z)[:, 0]


def epoch_plain(train, seed: int) -> float:
    torch.manual_seed(seed)
    model = PlainABMIL()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5)
    loss_fn = nn.BCEWithLogitsLoss()
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    t0 = time.perf_counter()
    for i in order:
        bag = train[i]
        loss = loss_fn(model(bag.features.float()), torch.tensor([float(bag.label)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def adam_step_ms(threads: int, fused: bool, steps: int = 40) -> float:
    """Median milliseconds per Adam step on the AB-MIL parameters (random gradients)."""
    from histomil.models import create_model

    torch.set_num_threads(threads)
    model = create_model("abmil", D, 1, hidden=H, attn_dim=A, gated=True, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5, fused=fused)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    for _ in range(3):
        opt.step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000  # median: robust to preemption by other jobs


def adam_table() -> None:
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; load: {_load()}")
    print("| threads | Adam (for-loop) ms/step | fused Adam ms/step | ratio |")
    print("|---|---|---|---|")
    for threads in (1, 2):
        plain, fused = adam_step_ms(threads, False), adam_step_ms(threads, True)
        print(f"| {threads} | {plain:.1f} | {fused:.1f} | {plain / fused:.1f}x |")


def full_train_patches(cohort: Path) -> int:
    """Patches of the whole training split (from file metadata, nothing loaded)."""
    import h5py

    df = pd.read_csv(cohort / "manifest.csv", dtype={"slide_id": str})
    total = 0
    for sid in df.loc[df["split"] == "train", "slide_id"]:
        with h5py.File(cohort / "bags" / f"{sid}.h5", "r") as f:
            total += int(f["features"].shape[0])
    return total


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path)
    ap.add_argument("--generate", action="store_true", help="write the cohort first")
    ap.add_argument("--limit", type=int, default=None, help="only this many training bags")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--chunks", type=int, default=8, help="interleaving chunks per round")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--skip", nargs="*", default=[], help="configurations to leave out")
    ap.add_argument("--adam-only", action="store_true", help="only the optimiser-step table")
    args = ap.parse_args()
    if args.adam_only:
        adam_table()
        return
    torch.set_num_threads(args.threads)
    if args.generate:
        from histomil.synth.bags import generate_bags

        splits = (("train", 89, 127), ("val", 4, 4), ("test", 1, 1))
        generate_bags(args.cohort, "camelyon16", seed=0, splits=splits)
    t0 = time.perf_counter()
    train, val = load_train_bags(args.cohort, args.limit)
    n_patches = sum(b.n_instances for b in train)
    print(
        f"loaded {len(train)} training bags, {n_patches:,} patches in {time.perf_counter() - t0:.1f} s"
    )
    print(f"load: {_load()}")
    runs = {
        "histomil bag": lambda bags, s: epoch_histomil(bags, val, "bag", args.dropout, s),
        "histomil rank": lambda bags, s: epoch_histomil(
            bags, val, "rank_induction", args.dropout, s
        ),
        "histomil bf16": lambda bags, s: epoch_histomil(
            bags, val, "bag", args.dropout, s, "bfloat16"
        ),
        "torchmil": epoch_torchmil,
        "plain torch": epoch_plain,
        "bf16 GEMM floor": lambda bags, s: gemm_epoch(bags, torch.bfloat16),
        "GEMM floor": lambda bags, s: gemm_epoch(bags),
    }
    runs = {k: v for k, v in runs.items() if k not in args.skip or k == "GEMM floor"}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up (allocator, caches, lazy init), not timed
        fn(train[:2], 0)
    # Each round is split into chunks of bags; every configuration runs on a chunk before the
    # next chunk starts, so slow phases of the background load hit all configurations alike.
    size = -(-len(train) // args.chunks)
    chunks = [train[i : i + size] for i in range(0, len(train), size)]
    for r in range(args.rounds):
        total = dict.fromkeys(runs, 0.0)
        for c, chunk in enumerate(chunks):
            for name, fn in runs.items():
                total[name] += fn(chunk, 1000 * r + c)
            print(f"round {r} chunk {c + 1}/{len(chunks)}: {_load()}", flush=True)
        for name, t in total.items():
            times[name].append(t)
            print(f"round {r}: {name:14s} {t:7.2f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    floor = best.pop("GEMM floor")
    floor_rounds = times.pop("GEMM floor")
    flops = n_patches * flops_per_patch()
    full = full_train_patches(args.cohort)
    scale = full / n_patches  # epoch time is linear in patches (one bag per step)
    print(f"\nload: {_load()}")
    print(
        f"epoch FLOPs {flops / 1e12:.2f} TFLOP; GEMM-only epoch {floor:.1f} s "
        f"(rounds {', '.join(f'{x:.1f}' for x in floor_rounds)}) = {flops / floor / 1e9:.1f} "
        f"GFLOP/s with {args.threads} thread(s)"
    )
    print(
        f"measured on {len(train)} bags ({n_patches:,} patches); the full training split has "
        f"{full:,} patches (x{scale:.2f})"
    )
    print("\n| configuration | s measured | s/epoch, full split | vs floor | vs torchmil |")
    print("|---|---|---|---|---|")
    tm = best.get("torchmil")
    for name, t in [*best.items(), ("GEMM floor", floor)]:
        rel = f"{t / tm:.2f}x" if tm else "-"
        print(f"| {name} | {t:.1f} | {t * scale:.1f} | {t / floor:.2f}x | {rel} |")
    if "histomil bag" in best and "histomil rank" in best:
        over = best["histomil rank"] / best["histomil bag"] - 1
        print(f"\nrank induction overhead: {100 * over:+.1f} %")


if __name__ == "__main__":
    main()
