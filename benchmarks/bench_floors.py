"""Every model of the zoo and MHIM-v2 (AB-MIL, TransMIL, DS-MIL students) against its own floor.

Usage::

    python benchmarks/bench_floors.py [--sizes 2000 8000] [--threads 1 2] [--reps 3]
    python benchmarks/bench_floors.py --memory --sizes 8000 50000

**Floor** of a configuration = the time of exactly its matrix multiplies and convolutions: one
training step (forward + backward, MHIM: teacher pass, masking, student, recycle network,
consistency loss, EMA update) runs once under a ``TorchDispatchMode`` that records every
``mm``/``addmm``/``bmm``/``baddbmm``/``convolution``/``convolution_backward``/attention kernel
with its shapes and strides (forward *and* backward, as autograd issues them; torch's fused
attention as the products of the written-out attention); the recorded calls are then
replayed back to back on random tensors of the same layout, each weighted by how often the
step makes it, and the floor is the best of ``--reps`` such rounds (the "per-call floor"
beside it sums each distinct call's own best). **Time** = best of
``--reps`` real steps after a warm-up, one step after each round of replays (interleaved, so
that both see the same load). ``ratio`` = time / floor: what the step spends outside
its matrix arithmetic (elementwise work, softmax, sorting, Python). FLOPs are counted by hand
from the recorded shapes (``2 m k n`` per product; a convolution ``2 * outputs * C_in/groups *
kernel``, so depthwise convolutions are counted as what they are: torch's flop counter counts
their backward as dense).

``--memory``: each (configuration, N) point in ``--reps`` fresh processes; the peak bytes torch's
allocator holds during a step (from the profiler's memory events: deterministic, the analogue of
the GPU peak the MHIM paper reports), the median peak extra RSS of a step (as
``bench_models.py``; it also counts fragmentation and BLAS scratch memory and varies by tens of
MiB between identical processes), and the bytes autograd saves for the backward pass
(activations by count: every distinct storage handed to ``saved_tensors_hooks``, the bag's
input included).

Every table is printed with the CPU's flags (avx2/avx512*/amx*), torch's threads, the BLAS in
use and ``uptime``. The MHIM paper's Table 6 ratios (RTX 3090) are printed beside ours.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import D, make_bag_inputs, model_step, peak_point  # noqa: E402

MHIM_STUDENTS = ("abmil", "transmil", "dsmil")
# The MHIM paper's Table 6 train-time and memory ratios to AB-MIL (RTX 3090, CAMELYON).
PAPER = {
    "abmil": (1.0, 1.0),
    "dtfd": (5.1 / 3.1, 2.1 / 2.3),
    "transmil": (13.2 / 3.1, 10.6 / 2.3),
    "mhim_v2:abmil": (4.3 / 3.1, 2.8 / 2.3),
    "mhim_v2:transmil": (10.5 / 3.1, 5.6 / 2.3),
}


def configs() -> list[str]:
    from histomil.models import names

    zoo = ["abmil"] + [m for m in names() if m != "abmil"]
    return zoo + [f"mhim_v2:{s}" for s in MHIM_STUDENTS]


def build_step(config: str, n: int, seed: int = 0):
    """(step function, parameter count) of one training step of ``config`` on an N-bag, in a
    process set up as training sets it up (``keep_freed_memory``, as ``run_fold`` calls it)."""
    import torch

    from histomil.hardware import keep_freed_memory
    from histomil.models import create_model

    keep_freed_memory()

    torch.manual_seed(seed)
    x, coords, label = make_bag_inputs(n)
    if not config.startswith("mhim_v2:"):
        model = create_model(config, D, 1).train()
        params = sum(p.numel() for p in model.parameters())
        return (lambda: model_step(model, x, coords, label)), params
    from histomil.bags.bag import Bag
    from histomil.objectives import TrainContext, create_objective

    student = config.split(":", 1)[1]
    model = create_model(student, D, 1).train()
    baseline = create_model(student, D, 1).state_dict()
    obj = create_objective("mhim_v2")
    obj.setup(model, TrainContext(task="classification", seed=seed, baseline_state=baseline))
    obj.train()
    bag = Bag("b", x, 1)

    def step() -> None:
        obj(model, bag).loss.backward()
        obj.after_optimizer_step(model)  # EMA of teacher and recycle queries
        model.zero_grad(set_to_none=True)
        obj.zero_grad(set_to_none=True)

    params = sum(p.numel() for p in model.parameters())
    params += sum(p.numel() for p in obj.parameters() if p.requires_grad)
    return step, params


# -- recording and replaying the matrix arithmetic ------------------------------------------------
def _arith_ops():
    import torch

    aten = torch.ops.aten
    ops = {
        aten.mm.default,
        aten.addmm.default,
        aten.bmm.default,
        aten.baddbmm.default,
        aten.convolution.default,
        aten.convolution_backward.default,
    }
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention_for_cpu_backward",
        "_native_multi_head_attention",
    ):
        if hasattr(aten, name):
            ops.add(getattr(aten, name).default)
    return ops


def _inplace_products() -> dict:
    """Accumulating in-place products (``X.baddbmm_(A, B)``, as in the pseudo-inverse's
    backward) and the out-of-place op they are recorded and replayed as: the same product."""
    import torch

    aten = torch.ops.aten
    return {aten.addmm_.default: aten.addmm.default, aten.baddbmm_.default: aten.baddbmm.default}


def _spec(a):
    import torch

    if isinstance(a, torch.Tensor):
        return ("T", tuple(a.shape), tuple(a.stride()), str(a.dtype))
    if isinstance(a, (list, tuple)):
        return tuple(_spec(v) for v in a)
    return a


def record(step) -> Counter:
    """Counter of (op, argument layout, output shapes) over one call of ``step``."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    ops, inplace = _arith_ops(), _inplace_products()
    calls: Counter = Counter()

    class Rec(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            # the layout of an in-place op's first argument, before the op writes to it
            spec = _spec(tuple(args)) if func in ops or func in inplace else None
            out = func(*args, **(kwargs or {}))
            if func in inplace:
                func = inplace[func]
            if func in ops:
                outs = out if isinstance(out, (list, tuple)) else (out,)
                shapes = tuple(
                    tuple(o.shape) if isinstance(o, torch.Tensor) else None for o in outs
                )
                kw = tuple(sorted((k, _spec(v)) for k, v in (kwargs or {}).items()))
                calls[(func, spec, kw, shapes)] += 1
            return out

    with Rec():
        step()
    out: Counter = Counter()
    for key, count in calls.items():
        gemms = _attention_gemms(key[0], key[1])
        for gemm in gemms or [key]:
            out[gemm] += count
    return out


def _attention_gemms(func, args) -> list | None:
    """torch's fused CPU attention as the batched products the same attention makes written out:
    forward ``S = Q K^T`` and ``P V``; backward ``dV = P^T dO``, ``dP = dO V^T``, ``dQ = dS K``
    and ``dK^T = Q^T dS``, with the shapes and layouts autograd gives them. Its softmax, its
    scaling and the recomputation of ``Q K^T`` in its backward are not arithmetic of the floor:
    replaying the kernel itself would count them as floor. ``None`` for any other call."""
    import torch

    name = str(func)
    if "flash_attention" not in name:
        return None
    backward = "backward" in name
    q, k, v = (a[1] for a in (args[1:4] if backward else args[:3]))
    dtype = args[1][3]
    *lead, length, e = q
    s_len, ev = k[-2], v[-1]
    bh = _numel(lead)

    def t(rows, cols, transposed=False):  # (bh, rows, cols), optionally a transposed view
        if transposed:
            return ("T", (bh, rows, cols), (rows * cols, 1, rows), dtype)
        return ("T", (bh, rows, cols), (rows * cols, cols, 1), dtype)

    products = [(t(length, e), t(e, s_len, True)), (t(length, s_len), t(s_len, ev))]
    if backward:
        products = [
            (t(s_len, length, True), t(length, ev)),  # dV = P^T dO
            (t(length, ev), t(ev, s_len, True)),  # dP = dO V^T
            (t(length, s_len), t(s_len, e)),  # dQ = dS K
            (t(e, length, True), t(length, s_len)),  # dK^T = Q^T dS
        ]
    bmm = torch.ops.aten.bmm.default
    return [(bmm, pair, (), ((bh, pair[0][1][1], pair[1][1][2]),)) for pair in products]


def _make(spec, gen):
    import torch

    if isinstance(spec, tuple) and spec and spec[0] == "T":
        _, shape, stride, dtype = spec
        dt = getattr(torch, dtype.split(".")[-1])
        size = 1 + sum((s - 1) * st for s, st in zip(shape, stride, strict=True) if s > 0)
        if dt.is_floating_point:
            base = torch.randn(max(size, 1), generator=gen).to(dt)
        else:
            base = torch.zeros(max(size, 1), dtype=dt)
        return base.as_strided(shape, stride)
    if isinstance(spec, tuple):
        return tuple(_make(v, gen) for v in spec)
    return spec


def flops(func, args, shapes) -> float:
    """Multiply-add FLOPs (x2) of one recorded call, counted from its shapes."""
    name = str(func)
    t = [a for a in args if isinstance(a, tuple) and a and a[0] == "T"]
    if "aten.mm" in name or "aten.addmm" in name:
        a, b = t[-2][1], t[-1][1]
        return 2.0 * a[0] * a[1] * b[1]
    if "aten.bmm" in name or "aten.baddbmm" in name:
        a, b = t[-2][1], t[-1][1]
        return 2.0 * a[0] * a[1] * a[2] * b[2]
    if "convolution_backward" in name:
        grad_out, weight = t[0][1], t[2][1]
        mask = args[10]  # (input grad, weight grad, bias grad); weight is (C_out, C_in/groups, k)
        per = 2.0 * _numel(grad_out) * weight[1] * _numel(weight[2:])
        return per * (int(mask[0]) + int(mask[1]))
    if "convolution" in name:
        weight = t[1][1]
        return 2.0 * _numel(shapes[0]) * weight[1] * _numel(weight[2:])
    return 0.0


def _numel(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def replay(calls: Counter, reps: int, step=None) -> tuple[float, float, float, float]:
    """(floor seconds, per-call floor seconds, FLOPs, step seconds) of the recorded calls
    replayed back to back.

    **floor** = the best of ``reps`` rounds, a round being every recorded call once, back to
    back, weighted by how often the step makes it: the same statistic as the step's time (best
    of ``reps`` whole steps). **per-call floor** = the sum over distinct calls of each call's own
    best, a lower bound of the floor: with many distinct calls whose times vary from round to
    round (two threads on this VM) it adds up the luck of every call, which no single round or
    step has. ``step`` (when given) is timed once per round between the rounds of replays, best
    of ``reps``: interleaving makes the floor and the step see the same machine (timed minutes
    apart on a shared VM, their ratio moved by +-30 %)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    prepared = []
    for (func, args, kwargs, shapes), count in calls.items():
        a, kw = _make(args, gen), {k: _make(v, gen) for k, v in kwargs}
        with torch.no_grad():
            func(*a, **kw)  # warm-up (workspace, packing)
        prepared.append((func, a, kw, count, flops(func, args, shapes) * count))
    best = [float("inf")] * len(prepared)
    round_best = step_best = float("inf")
    for _ in range(max(reps, 1)):
        total = 0.0
        with torch.no_grad():
            for i, (func, a, kw, count, _) in enumerate(prepared):
                t0 = time.perf_counter()
                func(*a, **kw)
                dt = time.perf_counter() - t0
                best[i] = min(best[i], dt)
                total += dt * count
        round_best = min(round_best, total)
        if step is not None:
            t0 = time.perf_counter()
            step()
            step_best = min(step_best, time.perf_counter() - t0)
    per_call = sum(b * p[3] for b, p in zip(best, prepared, strict=True))
    return round_best, per_call, sum(p[4] for p in prepared), step_best


# -- machine description --------------------------------------------------------------------------
def machine() -> str:
    """CPU flags that matter for float32/bf16 matrix arithmetic, torch threads, BLAS, load."""
    import torch

    flags: set[str] = set()
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    keep = sorted(f for f in flags if f in ("avx2", "fma") or f.startswith(("avx512", "amx")))
    cfg = torch.__config__.show()
    blas = [w.strip(" ,") for w in cfg.split() if w.startswith(("BLAS_INFO=", "LAPACK_INFO="))]
    mkldnn = "oneDNN (mkldnn) on" if torch.backends.mkldnn.is_available() else "no oneDNN"
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    from histomil.hardware import keep_freed_memory

    alloc = "glibc keeps freed memory" if keep_freed_memory() else "allocator defaults"
    return (
        f"CPU: {model}; flags: {' '.join(keep) or '-'}; {alloc}\n"
        f"torch {torch.__version__}: intra-op threads {torch.get_num_threads()}, inter-op "
        f"{torch.get_num_interop_threads()}; {'; '.join(blas) or 'BLAS ?'}; {mkldnn}\n"
        f"uptime: {uptime}"
    )


# -- measurements ---------------------------------------------------------------------------------
def time_point(config: str, n: int, reps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    step, params = build_step(config, n)
    step()  # warm-up
    calls = record(step)
    floor, per_call, fl, best = replay(calls, reps, step)
    return {"config": config, "n": n, "threads": threads, "params": params, "floor": floor,
            "floor_per_call": per_call, "flops": fl, "time": best}  # fmt: skip


def torch_peak_mb(step) -> float:
    """Peak MiB torch's allocator holds during one call of ``step`` (deterministic, unlike RSS;
    ``histomil.hardware.peak_allocated_bytes``)."""
    from histomil.hardware import peak_allocated_bytes

    return peak_allocated_bytes(step) / 2**20


def memory_point(config: str, n: int) -> dict:
    """Peak extra RSS of one step (fresh process), the peak torch allocates in the next step,
    and the bytes saved for backward."""
    import torch

    torch.set_num_threads(1)
    step, _ = build_step(config, n)
    saved: dict[int, int] = {}

    def pack(t):  # one entry per storage: views of one buffer are counted once
        st = t.untyped_storage()
        saved[st.data_ptr()] = st.nbytes()
        return t

    def counted() -> None:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()

    _, peak = peak_point(counted, 0)
    return {"config": config, "n": n, "peak_mb": peak, "alloc_mb": torch_peak_mb(step),
            "saved_mb": sum(saved.values()) / 2**20}  # fmt: skip


def _subprocess(args: list[str]) -> dict | None:
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if res.returncode != 0:
        print(f"{args} failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def _paper(config: str, i: int) -> str:
    return f"{PAPER[config][i]:.2f}" if config in PAPER else "-"


def time_table(cfgs: list[str], sizes: list[int], threads: list[int], reps: int) -> None:
    for th in threads:
        rows = []
        for n in sizes:
            for c in cfgs:
                r = _subprocess(["--point", c, str(n), "--reps", str(reps), "--threads", str(th)])
                if r:
                    rows.append(r)
                    print(f"# {json.dumps(r)}", file=sys.stderr, flush=True)  # partial runs
        import torch

        torch.set_num_threads(th)
        print(f"\n{machine()}\n")
        print("| config | N | GFLOP | floor (s) | time (s) | time / floor | per-call floor (s) | "
              "time / per-call floor | time x AB-MIL | floor x AB-MIL | "
              "paper train time x AB-MIL |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        base = {r["n"]: r for r in rows if r["config"] == "abmil"}
        for r in rows:
            b = base.get(r["n"])
            tx = f"{r['time'] / b['time']:.2f}" if b else "-"
            fx = f"{r['floor'] / b['floor']:.2f}" if b else "-"
            pc = r["floor_per_call"]
            print(f"| {r['config']} | {r['n']:,} | {r['flops'] / 1e9:.1f} | {r['floor']:.3f} | "
                  f"{r['time']:.3f} | {r['time'] / r['floor']:.2f} | {pc:.3f} | "
                  f"{r['time'] / pc:.2f} | {tx} | {fx} | {_paper(r['config'], 0)} |")  # fmt: skip


def memory_table(cfgs: list[str], sizes: list[int], reps: int) -> None:
    """Each point in ``reps`` fresh processes: the median peak extra RSS (it varies by tens of
    MiB between identical processes), the allocator peak and saved bytes (the same in each)."""
    import statistics

    rows = []
    for n in sizes:
        for c in cfgs:
            runs = [r for _ in range(reps) if (r := _subprocess(["--memory-point", c, str(n)]))]
            if runs:
                r = dict(runs[0], peak_mb=statistics.median(x["peak_mb"] for x in runs))
                r["peak_mb_range"] = (
                    min(x["peak_mb"] for x in runs),
                    max(x["peak_mb"] for x in runs),
                )
                rows.append(r)
                print(f"# {json.dumps(r)}", file=sys.stderr, flush=True)
    import torch

    torch.set_num_threads(1)  # as in memory_point, so the header says what was measured
    print(f"\n{machine()}\n")
    print(f"| config | N | peak allocated (MiB) | allocated x AB-MIL | allocated x student | "
          f"peak extra RSS (MiB, median of {reps}) | RSS range | saved for backward (MiB) | "
          "RSS x AB-MIL | paper memory x AB-MIL |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    by = {(r["config"], r["n"]): r for r in rows}
    for r in rows:
        b = by.get(("abmil", r["n"]))
        ax = f"{r['alloc_mb'] / b['alloc_mb']:.2f}" if b else "-"
        px = f"{r['peak_mb'] / b['peak_mb']:.2f}" if b and b["peak_mb"] > 0 else "-"
        student = by.get((r["config"].split(":", 1)[1], r["n"])) if ":" in r["config"] else None
        sx = f"{r['alloc_mb'] / student['alloc_mb']:.2f}" if student else "-"
        lo, hi = r["peak_mb_range"]
        print(f"| {r['config']} | {r['n']:,} | {r['alloc_mb']:.0f} | {ax} | {sx} | "
              f"{r['peak_mb']:.0f} | {lo:.0f}-{hi:.0f} | {r['saved_mb']:.0f} | {px} | "
              f"{_paper(r['config'], 1)} |")  # fmt: skip


def build_predict(config: str, n: int, seed: int = 0):
    """No-grad inference on an N-bag: the model in eval mode, or MHIM-v2's ``predict`` (the
    student on the full bag with the recycle tokens, as evaluation runs it)."""
    import torch

    from histomil.bags.bag import Bag
    from histomil.hardware import keep_freed_memory
    from histomil.models import create_model

    keep_freed_memory()
    torch.manual_seed(seed)
    x, coords, _ = make_bag_inputs(n)
    student = config.split(":", 1)[-1]
    model = create_model(student, D, 1).eval()
    if not config.startswith("mhim_v2:"):
        return lambda: model(x, coords=coords)
    from histomil.objectives import TrainContext, create_objective

    obj = create_objective("mhim_v2")
    baseline = create_model(student, D, 1).state_dict()
    obj.setup(model, TrainContext(task="classification", seed=seed, baseline_state=baseline))
    obj.eval()
    bag = Bag("b", x, 1, coords=coords)
    return lambda: obj.predict(model, bag)


def interleaved_best(fns: dict, rounds: int, warmup: int) -> dict[str, float]:
    """Best-of-``rounds`` seconds per function, one call of each per round (so all see the same
    machine state), after ``warmup`` untimed calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def inference_table(cfgs: list[str], n: int, rounds: int, threads: int) -> None:
    """Inference time per bag, the configurations interleaved in one process, best of
    ``rounds``; speed relative to AB-MIL (the paper's Table 6 reports MHIM-v2(AB-MIL) at
    0.57x AB-MIL's inference speed)."""
    import torch

    torch.set_num_threads(threads)
    fns = {c: build_predict(c, n) for c in cfgs}
    with torch.inference_mode():
        best = interleaved_best(fns, rounds, warmup=1)
    print(f"\n{machine()}\nN = {n:,}, inference (no grad), best of {rounds} interleaved\n")
    print("| config | s per bag | speed x AB-MIL |\n|---|---|---|")
    for c in cfgs:
        speed = f"{best['abmil'] / best[c]:.2f}" if "abmil" in best else "-"
        print(f"| {c} | {best[c]:.4f} | {speed} |")


def paired_table(cfgs: list[str], n: int, rounds: int, threads: int) -> None:
    """Training-step time per bag with the configurations interleaved in one process, best of
    ``rounds``, relative to AB-MIL: the paper-ratio goals (MHIM-v2(AB-MIL) <= 1.39x AB-MIL,
    MHIM-v2(TransMIL) <= 0.80x TransMIL) compared on the same machine state. The per-config
    table runs each configuration in its own process minutes apart, which on this VM moved
    AB-MIL's own step time by up to 20 % between runs."""
    import torch

    torch.set_num_threads(threads)
    best = interleaved_best({c: build_step(c, n)[0] for c in cfgs}, rounds, warmup=2)
    print(f"\n{machine()}\nN = {n:,}, training step, best of {rounds} interleaved\n")
    print("| config | s per step | time x AB-MIL | time x its student |\n|---|---|---|---|")
    for c in cfgs:
        rel = f"{best[c] / best['abmil']:.2f}" if "abmil" in best else "-"
        student = c.split(":", 1)[-1]
        own = f"{best[c] / best[student]:.2f}" if c != student and student in best else "-"
        print(f"| {c} | {best[c]:.4f} | {rel} | {own} |")


def recycle_ab(n: int, student: str, rounds: int) -> None:
    """MHIM-v2 step with the recycle network's old ``nn.MultiheadAttention`` path vs the factored
    one, and the student's own ``bag`` step; interleaved in one process, best of ``rounds``."""
    import torch

    from histomil.objectives.mhim.recycle import GlobalRecycle

    torch.set_num_threads(1)
    factored = GlobalRecycle._factored

    def mha(self, q, kv):  # what GlobalRecycle.forward computed before issue 17
        return self.attn(q, kv, kv, need_weights=False)[0]

    step, _ = build_step(f"mhim_v2:{student}", n)
    base, _ = build_step(student, n)
    runs = {"old": (step, mha), "new": (step, factored), "base": (base, factored)}
    gflop, best = {}, dict.fromkeys(runs, float("inf"))
    for name, (fn, impl) in runs.items():
        GlobalRecycle._factored = impl
        fn()  # warm-up
        calls = record(fn)
        gflop[name] = sum(flops(f, a, sh) * k for (f, a, _, sh), k in calls.items()) / 1e9
    for _ in range(rounds):
        for name, (fn, impl) in runs.items():
            GlobalRecycle._factored = impl
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    GlobalRecycle._factored = factored
    print(f"\n{machine()}\nN = {n}, best of {rounds} interleaved\n")
    print(f"| step | GFLOP | s (best) | x {student} |\n|---|---|---|---|")
    labels = {"base": f"{student} (bag)", "old": "MHIM-v2, recycle before (nn.MultiheadAttention)",
              "new": "MHIM-v2, recycle factored"}  # fmt: skip
    for name in ("base", "old", "new"):
        print(f"| {labels[name]} | {gflop[name]:.1f} | {best[name]:.3f} | "
              f"{best[name] / best['base']:.2f} |")  # fmt: skip


def _test_module(name: str):
    path = Path(__file__).resolve().parents[1] / "tests/nn" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"reference_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _nystrom_references():
    """The earlier Nystrom attention forwards, which its test keeps as references: ``_reference``
    (before the layout change) and ``_materialized`` (before the fused attention)."""
    return _test_module("test_nystrom_layout")


@contextlib.contextmanager
def materialized_nystrom():
    """Nystrom attention with its (n' x m) kernels stored and multiplied left to right, as before
    the fused attention (issue 17), patched in for an A/B in one process."""
    from histomil.nn.nystrom import NystromAttention

    fused = NystromAttention.forward_with_query_logits
    NystromAttention.forward_with_query_logits = _nystrom_references()._materialized
    try:
        yield
    finally:
        NystromAttention.forward_with_query_logits = fused


@contextlib.contextmanager
def before_session12():
    """The implementation before the fused projection, the raw-bits dropout mask, DTFD's
    gather-only regrouping and the Nystrom layout change (issue 17), patched in for an A/B in
    one process."""
    import numpy as np
    import torch

    import histomil.models.dtfd as dtfd
    import histomil.nn.dropout as dropout
    from histomil.nn.nystrom import NystromAttention
    from histomil.nn.projection import Projection

    ref = _nystrom_references()  # Nystrom attention before its layout change

    def old_bits(n: int, p: float):  # Generator.integers(dtype=uint16), as before
        seed = int(torch.randint(0, 2**62, (1,)).item())
        bits = np.random.Generator(np.random.PCG64(seed)).integers(0, 65536, n, dtype=np.uint16)
        return bits >= np.uint16(min(round(p * 65536), 65535))

    def old_regroup(h, index, valid):  # h[i, keep] then h_i[index], differentiated by autograd
        return h[torch.arange(h.shape[0], device=h.device)][index]

    saved = (dropout._keep_bits, dtfd.regroup, Projection._fused)
    nystrom = NystromAttention.forward_with_query_logits
    dropout._keep_bits, dtfd.regroup, Projection._fused = old_bits, old_regroup, lambda s, x: False
    NystromAttention.forward_with_query_logits = ref._reference
    try:
        yield
    finally:
        dropout._keep_bits, dtfd.regroup, Projection._fused = saved
        NystromAttention.forward_with_query_logits = nystrom


@contextlib.contextmanager
def before_saving():
    """What the step kept for backward before session 14 (issue 17), patched in for an A/B in one
    process: the pseudo-inverse loop differentiated by autograd (six matrices per iteration,
    kept in its test as the reference) and MHIM's student projecting a copy of the selected
    instances (``project(x.index_select(1, rows))``, the copy kept)."""
    import histomil.nn.nystrom as nystrom
    from histomil.models.base import MILModel

    def select_first(self, x, rows=None):
        return self.fc(x if rows is None else x.index_select(1, rows))

    saved = (nystrom.iterative_pinv, MILModel.project)
    nystrom.iterative_pinv = _test_module("test_blocks")._pinv_by_autograd
    MILModel.project = select_first
    try:
        yield
    finally:
        nystrom.iterative_pinv, MILModel.project = saved


def ab_table(cfgs: list[str], n: int, rounds: int, threads: int, before) -> None:
    """Training step of each configuration with the implementation that the context manager
    ``before`` patches in and with the current one, interleaved in one process, best of
    ``rounds``."""
    import torch

    torch.set_num_threads(threads)
    steps = {c: build_step(c, n)[0] for c in cfgs}
    best = {(c, v): float("inf") for c in cfgs for v in ("before", "after")}
    for step in steps.values():  # warm-up both
        with before():
            step()
        step()
    for _ in range(rounds):
        for c, step in steps.items():
            for v in ("before", "after"):
                ctx = before() if v == "before" else contextlib.nullcontext()
                with ctx:
                    t0 = time.perf_counter()
                    step()
                    best[c, v] = min(best[c, v], time.perf_counter() - t0)
    peak = {}
    for c, step in steps.items():  # allocator peaks: deterministic, one step each
        with before():
            peak[c, "before"] = torch_peak_mb(step)
        peak[c, "after"] = torch_peak_mb(step)
    print(f"\n{machine()}\nN = {n:,}, training step, best of {rounds} interleaved\n")
    print("| config | before (s) | after (s) | after / before | peak allocated before (MiB) | "
          "after (MiB) | after / before |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for c in cfgs:
        b, a = best[c, "before"], best[c, "after"]
        pb, pa = peak[c, "before"], peak[c, "after"]
        print(f"| {c} | {b:.4f} | {a:.4f} | {a / b:.3f} | {pb:.0f} | {pa:.0f} | {pa / pb:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=None, help="default: all (see --list)")
    ap.add_argument("--memory", action="store_true", help="peak memory table instead of time")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--recycle-ab", metavar="STUDENT", help="old vs factored recycle network")
    ap.add_argument("--inference", action="store_true", help="inference speed table (no grad)")
    ap.add_argument(
        "--paired", action="store_true", help="training steps interleaved in one process"
    )
    ab = ap.add_mutually_exclusive_group()
    ab.add_argument(
        "--fusion-ab", action="store_true", help="before/after the fused projection (issue 17)"
    )
    ab.add_argument(
        "--attention-ab",
        action="store_true",
        help="Nystrom attention with stored kernels vs fused (issue 17)",
    )
    ab.add_argument(
        "--saving-ab",
        action="store_true",
        help="pseudo-inverse and MHIM projection keeping more for backward vs less (issue 17)",
    )
    ap.add_argument("--point", nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--memory-point", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point:
        r = time_point(args.point[0], int(args.point[1]), args.reps, args.threads[0])
        print(json.dumps(r))
        return
    if args.memory_point:
        print(json.dumps(memory_point(args.memory_point[0], int(args.memory_point[1]))))
        return
    if args.recycle_ab:
        recycle_ab(args.sizes[0], args.recycle_ab, args.reps)
        return
    cfgs = args.configs or configs()
    if args.list:
        print("\n".join(cfgs))
        return
    if args.fusion_ab or args.attention_ab or args.saving_ab:
        before = (
            before_session12
            if args.fusion_ab
            else materialized_nystrom
            if args.attention_ab
            else before_saving
        )
        for th in args.threads:
            ab_table(cfgs, args.sizes[-1], args.reps, th, before)
    elif args.inference:
        for th in args.threads:
            inference_table(cfgs, args.sizes[-1], args.reps, th)
    elif args.paired:
        for th in args.threads:
            paired_table(cfgs, args.sizes[-1], args.reps, th)
    elif args.memory:
        memory_table(cfgs, args.sizes, args.reps)
    else:
        time_table(cfgs, args.sizes, args.threads, args.reps)


if __name__ == "__main__":
    main()
