"""Computational cost of MIL methods on the same bags (the MHIM paper's Table 6, on this machine).

For every method: trainable parameters (student + strategy modules such as the MHIM recycle
network; the frozen EMA teacher is not counted, as in the paper), training seconds per epoch
(mean over ``epochs`` timed epochs, one optimizer step per bag), peak memory and inference
slides per second (``objective.predict`` on every bag, no gradients). ``warmup_steps`` untimed
optimizer steps (and as many untimed predictions) on the first bags come before the timed
epochs, so one-time costs (allocator growth, first-call dispatch) do not inflate the cheapest
method's time and with it every ratio.

Memory, two measures. **Step peak allocated** (the memory ratio): the most bytes torch's
allocator holds at once during one training step on the largest bag, above what it held before
the step (activations, gradients, the optimizer's update; CUDA: ``max_memory_allocated``, CPU: the
profiler's memory events), measured after the timed epochs; the same in every run, and what the
paper's GPU peak is made of. **Peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` over
the run; on CPU the increase of the process's peak resident set size over its size before
training (each method runs in a fresh process when ``isolate`` is on, so one method's peak never
hides another's), which also counts allocator fragmentation and varies between runs. Absolute numbers depend on the
machine; compare the *ratios* to AB-MIL with the paper's (RTX 3090, CAMELYON). One intra-op
thread by default: on a shared CPU, OpenMP threads that wait for each other make timings
meaningless (we measured a 20x slowdown with 2 threads on an oversubscribed machine).
MHIM methods start from a random "baseline" state: the cost does not depend on trained weights.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from histomil._io import atomic_write_text
from histomil.hardware import peak_allocated_bytes


@dataclass(frozen=True)
class CostMethod:
    """One row of the table: a model trained with an objective (and their parameters)."""

    label: str
    model: str
    objective: str = "bag"
    model_params: dict[str, Any] = field(default_factory=dict)
    objective_params: dict[str, Any] = field(default_factory=dict)


_PLAIN = {"gated": False}

DEFAULT_METHODS: tuple[CostMethod, ...] = (
    CostMethod("AB-MIL", "abmil"),
    CostMethod("AB-MIL (non-gated)", "abmil", "bag", _PLAIN),
    CostMethod("DTFD-MIL", "dtfd"),
    CostMethod("MHIM-v2(AB-MIL)", "abmil", "mhim_v2"),
    CostMethod("MHIM-v2(AB-MIL, non-gated)", "abmil", "mhim_v2", _PLAIN),
    CostMethod("TransMIL", "transmil"),
    CostMethod("MHIM-v2(TransMIL)", "transmil", "mhim_v2", {}, {"masking": {"beta_h": 0.03}}),
)

# Feature size and classes of the paper's Table 6 (CAMELYON, ResNet-50 features, 2 classes).
PAPER_IN_DIM, PAPER_N_CLASSES = 1024, 2

# The paper's Table 6 (RTX 3090, CAMELYON): parameters (M), train s/epoch, memory (GB), slides/s.
PAPER_TABLE6: dict[str, tuple[float, float, float, float]] = {
    "AB-MIL": (0.66, 3.1, 2.3, 1250),
    "DTFD-MIL": (0.99, 5.1, 2.1, 325),
    "MHIM-v2(AB-MIL)": (1.64, 4.3, 2.8, 714),
    "TransMIL": (2.67, 13.2, 10.6, 76),
    "MHIM-v2(TransMIL)": (3.72, 10.5, 5.6, 72),
}


@dataclass(frozen=True)
class CostSettings:
    """How to measure: timed epochs, bag cap, device, process isolation, seed, learning rate."""

    epochs: int = 1
    max_bags: int | None = None
    device: str = "cpu"
    isolate: bool = True
    seed: int = 0
    lr: float = 2e-4
    threads: int | None = 1  # torch intra-op threads (None: torch's default)
    warmup_steps: int = 2  # untimed training steps / predictions before timing


# the measured columns compared with the paper's Table 6 ratios, in its order (params, time,
# memory, speed); memory is the step's allocator peak, the same quantity as the paper's GPU peak
RATIO_COLUMNS = ("parameters", "train_s_per_epoch", "step_peak_alloc_mb", "infer_slides_per_s")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:  # pragma: no cover - not Linux
        return 0


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def _load(manifest: str, bags: str, max_bags: int | None) -> list:
    from histomil._io import read_csv
    from histomil.bags.dataset import load_cohort

    df = read_csv(manifest)  # ids stay text (00008, NA)
    if max_bags is not None:
        df = df.head(max_bags)
    return list(load_cohort(df, bags).values())


def build_method(method: CostMethod, in_dim: int, n_classes: int, seed: int = 0):
    """(model, objective) of ``method`` ready to train (MHIM: baseline = the model's own init)."""
    import torch

    from histomil.models import create_model
    from histomil.objectives import TrainContext, create_objective

    torch.manual_seed(seed)
    model = create_model(method.model, in_dim, n_classes, **method.model_params)
    objective = create_objective(method.objective, **method.objective_params)
    base = copy.deepcopy(model.state_dict()) if objective.needs_baseline else None
    objective.setup(model, TrainContext(n_classes=n_classes, seed=seed, baseline_state=base))
    return model, objective


def parameter_count(method: CostMethod, in_dim: int, n_classes: int) -> int:
    """Trainable parameters of student + strategy modules (the frozen teacher not counted)."""
    model, objective = build_method(method, in_dim, n_classes)
    return sum(p.numel() for m in (model, objective) for p in m.parameters() if p.requires_grad)


def table6_parameters(methods: tuple[CostMethod, ...] = DEFAULT_METHODS) -> pd.DataFrame:
    """Parameter counts at the paper's input (1024-d features, 2 classes) next to Table 6's.

    The paper's 0.66M AB-MIL is the gated variant and its 1.64M MHIM-v2(AB-MIL) the non-gated
    AB-MIL plus the recycle network (0.59M + 1.05M): both rows are listed.
    """
    rows = []
    for m in methods:
        # the paper's MHIM-v2(AB-MIL) row (1.64M) is the non-gated student + recycle network;
        # its AB-MIL row (0.66M) the gated one: no paper value for the non-gated baseline
        paper = PAPER_TABLE6.get(m.label.replace(", non-gated", ""))
        rows.append(
            {
                "method": m.label,
                "parameters_M": parameter_count(m, PAPER_IN_DIM, PAPER_N_CLASSES) / 1e6,
                "paper_parameters_M": paper[0] if paper else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def measure_one(method: CostMethod, manifest: str, bags: str, settings: CostSettings) -> dict:
    """Measure one method in this process (see the module docstring)."""
    import torch

    torch.manual_seed(settings.seed)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    dev = torch.device(settings.device)
    data = [b for b in _load(manifest, bags, settings.max_bags)]
    for b in data:
        b.features = b.features.float().to(dev)
    labels = sorted({int(b.label) for b in data})
    n_classes = 1 if len(labels) <= 2 else len(labels)
    in_dim = int(data[0].features.shape[1])
    model, objective = build_method(method, in_dim, n_classes, settings.seed)
    model.to(dev)
    objective.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    params += [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=settings.lr, weight_decay=1e-5)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rss0 = _rss_bytes()
    warm = data[: settings.warmup_steps]
    model.train()
    objective.train()
    for bag in warm:  # untimed; counted in the peak memory
        loss = objective(model, bag).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        objective.after_optimizer_step(model)
    seconds = []
    for epoch in range(settings.epochs):
        objective.on_epoch_start(epoch, settings.epochs)
        model.train()
        objective.train()
        start = time.perf_counter()
        for bag in data:
            loss = objective(model, bag).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            objective.after_optimizer_step(model)
        seconds.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        peak = max(0, _peak_rss_bytes() - rss0)
    largest = max(data, key=lambda b: b.n_instances)

    def one_step() -> None:
        loss = objective(model, largest).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        objective.after_optimizer_step(model)

    step_peak = peak_allocated_bytes(one_step, dev)
    model.eval()
    objective.eval()
    with torch.no_grad():
        for bag in warm:
            objective.predict(model, bag)
    start = time.perf_counter()
    with torch.no_grad():
        for bag in data:
            objective.predict(model, bag)
    infer = time.perf_counter() - start
    return {
        "method": method.label,
        "model": method.model,
        "objective": method.objective,
        "parameters": sum(p.numel() for p in params),
        "train_s_per_epoch": sum(seconds) / len(seconds),
        "step_peak_alloc_mb": step_peak / 2**20,
        "peak_memory_mb": peak / 2**20,
        "infer_slides_per_s": len(data) / infer if infer > 0 else float("inf"),
        "n_bags": len(data),
        "mean_instances": sum(b.n_instances for b in data) / len(data),
    }


def _child(args: tuple) -> dict:
    return measure_one(*args)


def measure_cost(
    manifest: str | Path,
    bags: str | Path | None = None,
    out_dir: str | Path | None = None,
    methods: tuple[CostMethod, ...] = DEFAULT_METHODS,
    settings: CostSettings | None = None,
) -> pd.DataFrame:
    """Cost table of ``methods`` on the bags of ``manifest`` (bags default: ``<manifest dir>/bags``).

    Writes ``cost.csv`` and ``cost.md`` into ``out_dir`` when given. Ratios are to the first
    method (AB-MIL by default); the paper's Table 6 ratios are added for the methods it lists.
    """
    settings = settings or CostSettings()
    manifest = str(manifest)
    bags = str(bags) if bags is not None else str(Path(manifest).parent / "bags")
    rows = []
    for m in methods:
        args = (m, manifest, bags, settings)
        if settings.isolate:
            with mp.get_context("spawn").Pool(1) as pool:
                rows.append(pool.apply(_child, (args,)))
        else:
            rows.append(measure_one(*args))
    table = add_ratios(pd.DataFrame(rows))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "cost.csv", table.to_csv(index=False))
        params = table6_parameters(methods)
        atomic_write_text(out / "parameters.csv", params.to_csv(index=False))
        atomic_write_text(
            out / "cost.md", to_markdown(table, settings) + "\n" + parameters_markdown(params)
        )
    return table


def add_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Ratios to the first row, and the paper's Table 6 ratios to AB-MIL where known."""
    t = table.copy()
    ref = t.iloc[0]
    cols = RATIO_COLUMNS
    for c in (*cols, "peak_memory_mb"):
        t[f"{c}_ratio"] = t[c] / ref[c] if ref[c] else float("nan")
    paper_ref = PAPER_TABLE6["AB-MIL"]
    for i, c in enumerate(cols):
        t[f"paper_{c}_ratio"] = [
            PAPER_TABLE6[m][i] / paper_ref[i] if m in PAPER_TABLE6 else float("nan")
            for m in t["method"]
        ]
    return t


def to_markdown(table: pd.DataFrame, settings: CostSettings | None = None) -> str:
    """The table as markdown: measured values, ratios to the first row and the paper's ratios."""
    head = (
        "| method | parameters | train s/epoch | step peak allocated (MB) | peak memory (MB) "
        "| inference slides/s | ratios: params / time / memory / speed | paper Table 6 ratios |\n"
        "|---|---:|---:|---:|---:|---:|---|---|\n"
    )
    lines = []
    for _, r in table.iterrows():
        ours = " / ".join(f"{r[c + '_ratio']:.2f}" for c in RATIO_COLUMNS)
        paper = " / ".join(f"{r['paper_' + c + '_ratio']:.2f}" for c in RATIO_COLUMNS)
        lines.append(
            f"| {r['method']} | {int(r['parameters']):,} | {r['train_s_per_epoch']:.2f} "
            f"| {r['step_peak_alloc_mb']:.1f} | {r['peak_memory_mb']:.1f} "
            f"| {r['infer_slides_per_s']:.1f} | {ours} | {paper} |"
        )
    note = ""
    if settings is not None and len(table):
        r0 = table.iloc[0]
        note = (
            f"\n{int(r0['n_bags'])} bags, {r0['mean_instances']:.0f} instances on average; "
            f"settings: {asdict(settings)}.\n"
        )
    return head + "\n".join(lines) + "\n" + note


def parameters_markdown(params: pd.DataFrame) -> str:
    """Parameter counts at the paper's input size next to Table 6."""
    lines = [
        f"Parameters at the paper's input ({PAPER_IN_DIM}-d features, {PAPER_N_CLASSES} classes):",
        "",
        "| method | parameters (M) | paper Table 6 (M) |",
        "|---|---:|---:|",
    ]
    for _, r in params.iterrows():
        paper = "" if pd.isna(r["paper_parameters_M"]) else f"{r['paper_parameters_M']:.2f}"
        lines.append(f"| {r['method']} | {r['parameters_M']:.2f} | {paper} |")
    return "\n".join(lines) + "\n"
