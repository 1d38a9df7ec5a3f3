"""What the machine's CPU/GPU runs natively: bfloat16 is fast only where the hardware has it.

Machines of one project differ (one CPU has AVX512-BF16 or AMX, another only AVX2). Without
native support torch emulates bfloat16 matrix multiplies, which is slower than float32: an
explicit bfloat16 request then warns, and ``auto`` never picks it.
"""

from __future__ import annotations

import functools
import warnings

_WARNED: set[str] = set()


class EmulatedPrecisionWarning(UserWarning):
    """bfloat16 was asked for on hardware that only emulates it."""


def native_bf16(device) -> bool:  # noqa: ANN001  (torch.device, imported lazily)
    """Whether ``device`` runs bfloat16 matrix multiplies natively (asked once per type)."""
    return _native_bf16(device.type)


@functools.cache
def _native_bf16(device_type: str) -> bool:
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_if_emulated_bf16(device) -> bool:  # noqa: ANN001
    """Warn (once per process and device type) when bfloat16 is emulated on ``device``;
    returns whether it is native."""
    native = native_bf16(device)
    if not native and device.type not in _WARNED:
        _WARNED.add(device.type)
        warnings.warn(
            f"bfloat16 is not native on this {device.type} (no AVX512-BF16/AMX): torch emulates "
            "it, which is slower than float32 and no more accurate; use float32 here",
            EmulatedPrecisionWarning,
            stacklevel=3,
        )
    return native


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's allocator reuse freed tensor memory instead of returning it to the system.

    A training step allocates and frees the same large activations every time (8,000 x 512
    float32 = 16 MB; a gathered 8,000 x 1,024 input, 31 MB). glibc returns large freed blocks
    to the kernel (mmap above its threshold; heap tops above the trim threshold), so each step
    page-faults and zero-fills them again: 3,500-16,000 minor faults per AB-MIL / MHIM-v2 step,
    7-10x fewer with this (the time gain is up to ~15 %; ``benchmarks/README.md``, "Floors").
    This fixes the mmap threshold at glibc's maximum (32 MiB) and the trim threshold at 1 GiB
    for this process (``mallopt``; the same as the ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` environment variables), as the caching allocators of GPU
    frameworks do. Peak memory is unchanged; the process keeps up to 1 GiB of freed memory for
    reuse. Returns whether it applied (glibc on Linux only); ``HISTOMIL_KEEP_FREED_MEMORY=0``
    turns it off. Results do not depend on it.
    """
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("HISTOMIL_KEEP_FREED_MEMORY") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def peak_allocated_bytes(fn, device="cpu") -> int:  # noqa: ANN001
    """The most bytes torch's allocator holds at once while ``fn()`` runs, above what it held
    when ``fn`` started: the memory a training step needs, the same in every run.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU: torch keeps no peak counter,
    so the profiler's memory events (every allocation and free, with its size) are summed in
    time order. Unlike the process's peak RSS, this leaves out allocator fragmentation and
    BLAS scratch memory, which vary by tens of MiB between identical runs.
    """
    import os

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # its GPU probe logs errors on a CPU machine
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cpu = torch._C._autograd.DeviceType.CPU
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        if e.device_type() == cpu:
            live += e.nbytes()
            peak = max(peak, live)
    return peak
