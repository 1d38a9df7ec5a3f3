"""Per-step overhead of the trainer on small models: ``fit`` vs a bare loop, same model and bags.

Usage::

    python benchmarks/bench_step_overhead.py [--bags 64] [--patches 400] [--dim 32] [--rounds 5]

Small bags (the ``camelyon16-small`` preset's size: ~400 patches of 32-d) make every step cheap,
so whatever the trainer adds per step (moving a bag, the objective's bookkeeping, loss terms,
the optimiser call) shows. Both sides train the same AB-MIL (histomil's default sizes) with the
same fused Adam on the same in-memory bags in the same order, one torch thread; the bare loop is
``loss = BCE(model(x)); backward; step``. Rounds alternate between the two (best of ``--rounds``
each), so background load hits both alike. Prints ms per step and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.objectives import TrainContext, create_objective
from histomil.training.config import TrainSettings
from histomil.training.trainer import _adam, fit


class _Done(Exception):
    pass


def make_bags(n: int, patches: int, dim: int, seed: int) -> list[Bag]:
    gen = torch.Generator().manual_seed(seed)
    bags = []
    for i in range(n):
        label = i % 2
        x = torch.randn(patches, dim, generator=gen)
        lesion = torch.zeros(patches, dtype=torch.long)
        if label:
            lesion[: patches // 20] = 1
            x[: patches // 20, 0] += 3.0
        bags.append(Bag(slide_id=f"b{i}", features=x, label=label, patch_labels=lesion))
    return bags


def epoch_fit(bags: list[Bag], val: list[Bag], objective_name: str, dim: int) -> float:
    torch.manual_seed(0)
    model = create_model("abmil", dim, 1, dropout=0.0)
    objective = create_objective(objective_name)
    objective.setup(model, TrainContext(0, "classification", 1, "", 0))
    settings = TrainSettings(max_epochs=2, warmup_epochs=1, patience=1, eval_every=2)
    stamps: list[float] = []

    def stop(row):  # the first epoch ends without validation (eval_every=2)
        stamps.append(time.perf_counter())
        raise _Done

    t0 = time.perf_counter()
    try:
        fit(model, objective, bags, val, settings, "classification", 0, stop)
    except _Done:
        pass
    return stamps[0] - t0


def epoch_bare(bags: list[Bag], dim: int) -> float:
    torch.manual_seed(0)
    model = create_model("abmil", dim, 1, dropout=0.0)
    opt = _adam(list(model.parameters()), 2e-4, 1e-5)
    loss_fn = nn.BCEWithLogitsLoss()
    order = torch.randperm(len(bags), generator=torch.Generator().manual_seed(0)).tolist()
    model.train()
    t0 = time.perf_counter()
    for i in order:
        bag = bags[i]
        out = model(bag.features[None])
        loss = loss_fn(out.logits[:, 0], torch.tensor([float(bag.label)]))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bags", type=int, default=64)
    ap.add_argument("--patches", type=int, default=400)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bags = make_bags(args.bags, args.patches, args.dim, 0)
    val = make_bags(2, args.patches, args.dim, 1)
    runs = {
        "bare loop": lambda: epoch_bare(bags, args.dim),
        "fit, bag": lambda: epoch_fit(bags, val, "bag", args.dim),
        "fit, rank_induction": lambda: epoch_fit(bags, val, "rank_induction", args.dim),
    }
    for fn in runs.values():  # warm-up
        fn()
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(fn())
    base = min(times["bare loop"]) / args.bags * 1e3
    print(f"{args.bags} bags x {args.patches} patches x {args.dim}-d, 1 thread")
    print("| configuration | ms/step | vs bare loop |")
    print("|---|---|---|")
    for name, ts in times.items():
        ms = min(ts) / args.bags * 1e3
        print(f"| {name} | {ms:.2f} | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
