"""bfloat16 on hardware that only emulates it: a warning, and `auto` never picks it."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from histomil import hardware
from histomil.features.extract import resolve_precision


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setattr(hardware, "_native_bf16", lambda device_type: False)
    monkeypatch.setattr(hardware, "_WARNED", set())


def test_explicit_bf16_on_emulating_cpu_warns_once(emulated):
    cpu = torch.device("cpu")
    with pytest.warns(hardware.EmulatedPrecisionWarning, match="not native"):
        assert resolve_precision("bf16", cpu) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", cpu) == "bf16"  # once per process


def test_auto_never_picks_emulated_bf16(emulated):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_native_bf16_is_chosen_silently(monkeypatch):
    monkeypatch.setattr(hardware, "_native_bf16", lambda device_type: True)
    monkeypatch.setattr(hardware, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto", torch.device("cpu")) == "bf16"
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_training_autocast_warns_on_emulated_bf16(emulated):
    from histomil.training.trainer import _autocast

    with pytest.warns(hardware.EmulatedPrecisionWarning):
        with _autocast(torch.device("cpu"), "bfloat16"):
            pass


def test_keep_freed_memory_sets_glibc_thresholds(monkeypatch):
    """mallopt(M_MMAP_THRESHOLD = -3, 32 MiB) and mallopt(M_TRIM_THRESHOLD = -1, 1 GiB). Its
    effect (7-10x fewer page faults per training step) is measured in benchmarks/README.md;
    a page-fault count is too machine-dependent (transparent huge pages) for a test."""
    import ctypes

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("HISTOMIL_KEEP_FREED_MEMORY", raising=False)
    hardware.keep_freed_memory.cache_clear()
    try:
        assert hardware.keep_freed_memory() is True
        assert calls == [(-3, 32 * 2**20), (-1, 2**30)]
        assert hardware.keep_freed_memory() is True and len(calls) == 2  # once per process
    finally:
        hardware.keep_freed_memory.cache_clear()


def test_keep_freed_memory_without_glibc_is_a_no_op(monkeypatch):
    import ctypes

    def missing(name):
        raise OSError(name)

    monkeypatch.setattr(ctypes, "CDLL", missing)
    monkeypatch.delenv("HISTOMIL_KEEP_FREED_MEMORY", raising=False)
    hardware.keep_freed_memory.cache_clear()
    try:
        assert hardware.keep_freed_memory() is False
    finally:
        hardware.keep_freed_memory.cache_clear()


def test_run_fold_applies_it(monkeypatch, tmp_path):
    import histomil.hardware as hw

    seen = []
    monkeypatch.setattr(hw, "keep_freed_memory", lambda: seen.append(1) or True)
    from histomil.training import fold

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(fold, "write_split", stop)  # the first thing after the set-up
    with pytest.raises(Stop):
        fold.run_fold(_Cfg(), _Split(), str(tmp_path))
    assert seen == [1]


class _Train:
    threads = None


class _Cfg:
    train = _Train()


class _Split:
    fold = 0


def test_keep_freed_memory_can_be_turned_off(monkeypatch):
    from histomil.hardware import keep_freed_memory

    keep_freed_memory.cache_clear()
    monkeypatch.setenv("HISTOMIL_KEEP_FREED_MEMORY", "0")
    try:
        assert keep_freed_memory() is False
    finally:
        keep_freed_memory.cache_clear()
    monkeypatch.delenv("HISTOMIL_KEEP_FREED_MEMORY")
    assert keep_freed_memory() is sys.platform.startswith("linux")  # glibc here


def test_peak_allocated_is_the_most_bytes_live_at_once_during_the_call() -> None:
    held = torch.zeros(2**20, dtype=torch.uint8)  # allocated before the call: not counted

    def step():
        a = torch.empty(2**20, dtype=torch.uint8)  # 1 MiB live
        b = torch.empty(3 * 2**20, dtype=torch.uint8)  # 4 MiB live
        del a
        c = torch.empty(2 * 2**20, dtype=torch.uint8)  # 5 MiB live: the peak
        del b, c
        d = torch.empty(4 * 2**20, dtype=torch.uint8)  # 4 MiB live
        del d

    assert hardware.peak_allocated_bytes(step) == 5 * 2**20
    assert hardware.peak_allocated_bytes(lambda: held.add_(1)) < 64  # in place: a scalar only


def test_peak_allocated_of_a_training_step_is_the_same_every_time() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(500, 64)

    def step():
        torch.relu(lin(x)).sum().backward()
        lin.zero_grad(set_to_none=True)

    first = hardware.peak_allocated_bytes(step)
    assert first >= 500 * 32 * 4  # at least the activation
    assert hardware.peak_allocated_bytes(step) == first
