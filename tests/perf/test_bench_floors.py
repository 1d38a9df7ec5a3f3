"""``benchmarks/bench_floors.py`` records exactly a step's matrix arithmetic and counts its FLOPs
by hand (depthwise convolutions at their real cost, not as dense ones)."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_floors  # noqa: E402


def _gflop(step) -> float:
    calls = bench_floors.record(step)
    return sum(bench_floors.flops(f, a, sh) * k for (f, a, _, sh), k in calls.items())


def test_linear_forward_and_weight_gradient_are_counted() -> None:
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(10, 8)  # input needs no gradient: forward + weight gradient only
    assert _gflop(lambda: lin(x).sum().backward()) == 2 * 10 * 8 * 4 * 2


def test_depthwise_convolution_is_counted_at_its_real_cost() -> None:
    conv = torch.nn.Conv1d(16, 16, 7, padding=3, groups=16)
    x = torch.randn(1, 16, 50, requires_grad=True)
    fwd = 2 * 16 * 50 * 7  # each output sums 7 products of one channel
    assert _gflop(lambda: conv(x).sum().backward()) == 3 * fwd  # + input and weight gradients


def test_replay_times_every_recorded_call() -> None:
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(10, 8)
    calls = bench_floors.record(lambda: lin(x).sum().backward())
    seconds, per_call, flops, step = bench_floors.replay(calls, reps=1)
    assert seconds > 0 and flops == 2 * 10 * 8 * 4 * 2 and step == float("inf")
    assert per_call == pytest.approx(seconds)  # one round: the same calls, the same times
    ran = []
    seconds, per_call, _, step = bench_floors.replay(calls, reps=3, step=lambda: ran.append(1))
    assert ran == [1, 1, 1] and 0 < step < 1  # one timed step per round of replays
    assert 0 < per_call <= seconds  # each call's best is no worse than the best round's


def test_floor_is_the_best_round_and_per_call_floor_adds_each_calls_best(monkeypatch) -> None:
    """Two calls whose times swap between rounds. Round 1: a 3 s, b 1 s (made twice by the
    step) = 5 s; round 2: a 1 s, b 3 s = 7 s. Floor = the best round, 5 s; per-call floor =
    a's best + 2 x b's best = 3 s, luck that no single round had."""

    def a():
        pass

    def b():
        pass

    calls = collections.Counter({(a, (), (), ()): 1, (b, (), (), ()): 2})
    clock = iter([0, 3, 3, 4, 10, 11, 11, 14])
    monkeypatch.setattr(bench_floors.time, "perf_counter", lambda: next(clock))
    floor, per_call, flops, step = bench_floors.replay(calls, reps=2)
    assert (floor, per_call, flops, step) == (5, 3, 0, float("inf"))


def test_interleaved_best_calls_each_function_once_per_round_after_the_warmup():
    order: list[str] = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    best = bench_floors.interleaved_best(fns, rounds=3, warmup=2)
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(best) == {"a", "b"} and all(0 <= v < 1 for v in best.values())


def test_fused_attention_is_recorded_as_the_products_of_the_written_out_attention() -> None:
    """Its floor is the products the attention needs, forward and backward: not the fused
    kernel itself (whose softmax and recomputed ``Q K^T`` are not arithmetic of the floor)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, requires_grad=True) for n in (40, 24, 24))

    def fused():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3).sin().sum().backward()

    def written_out():
        (torch.softmax(q @ k.transpose(-1, -2) * 0.3, -1) @ v).sin().sum().backward()

    calls = bench_floors.record(fused)
    assert {str(f) for f, *_ in calls} == {"aten.bmm.default"}
    assert calls == bench_floors.record(written_out)  # the same shapes and layouts
    assert _gflop(fused) == _gflop(written_out) == 6 * (2 * 6 * 40 * 24 * 8)
    floor, *_ = bench_floors.replay(calls, reps=1)
    assert floor > 0


def test_torch_peak_is_the_allocator_peak_in_mib() -> None:
    def step():
        torch.empty(3 * 2**20, dtype=torch.uint8)

    assert bench_floors.torch_peak_mb(step) == 3.0


def test_before_saving_patches_in_the_old_pinv_and_projection_and_restores_them() -> None:
    import histomil.nn.nystrom as nystrom
    from histomil.models import create_model
    from histomil.models.base import MILModel

    current = (nystrom.iterative_pinv, MILModel.project)
    model = create_model("abmil", 16, 1).train()
    x, rows = torch.randn(1, 30, 16, requires_grad=False), torch.tensor([3, 0, 7])

    def saved():  # bytes kept for backward by the projection of the selected rows
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.project(x, rows)
        return seen

    with bench_floors.before_saving():
        assert nystrom.iterative_pinv is not current[0] and MILModel.project is not current[1]
        old = saved()
        a = torch.softmax(torch.randn(2, 8, 8), -1)
        torch.testing.assert_close(nystrom.iterative_pinv(a, 3), current[0](a, 3))
    assert (nystrom.iterative_pinv, MILModel.project) == current
    new = saved()
    assert x.untyped_storage().data_ptr() in new and x.untyped_storage().data_ptr() not in old


def test_in_place_accumulating_products_are_counted_as_their_products() -> None:
    """``X.baddbmm_(A, B)`` (the pseudo-inverse's backward) and ``X.addmm_(A, B)`` are products of
    the floor: recorded as the out-of-place op, with the same shapes."""
    a, b = torch.randn(3, 5, 7), torch.randn(3, 7, 4)
    m, n = torch.randn(6, 7), torch.randn(7, 2)

    def in_place():
        torch.zeros(3, 5, 4).baddbmm_(a, b, alpha=-1)
        torch.zeros(6, 2).addmm_(m, n)

    def out_of_place():
        torch.baddbmm(torch.zeros(3, 5, 4), a, b, alpha=-1)
        torch.addmm(torch.zeros(6, 2), m, n)

    calls = bench_floors.record(in_place)
    assert {str(f) for f, *_ in calls} == {"aten.baddbmm.default", "aten.addmm.default"}
    assert calls == bench_floors.record(out_of_place)
    assert _gflop(in_place) == 2 * 3 * 5 * 7 * 4 + 2 * 6 * 7 * 2
    floor, *_ = bench_floors.replay(calls, reps=1)
    assert floor > 0
