"""Pinned MHIM teacher and global recycle network: EMA boundaries, schedules, distances and the
cross-attention replayed with the module's own layers (issue 22, mutation)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from histomil.models import create_model
from histomil.objectives.mhim.recycle import GlobalRecycle
from histomil.objectives.mhim.teacher import (
    build_teacher,
    consistency_loss,
    ema_update,
    flat_parameters,
    half_life_momentum,
    init_student,
    momentum_at,
    projection_parameter_names,
    relative_distance,
)


def _abmil(seed: int):
    torch.manual_seed(seed)
    return create_model("abmil", in_dim=6, n_classes=1, hidden=8, attn_dim=4)


def test_build_teacher_without_a_state_is_a_frozen_independent_copy():
    student = _abmil(0)
    teacher = build_teacher(student, None)
    assert not teacher.training and student.training
    for (n_t, p_t), (n_s, p_s) in zip(
        teacher.named_parameters(), student.named_parameters(), strict=True
    ):
        assert n_t == n_s and torch.equal(p_t, p_s)
        assert not p_t.requires_grad and p_s.requires_grad
        assert p_t.data_ptr() != p_s.data_ptr()


def test_projection_names_restore_the_training_mode():
    model = _abmil(0)
    for training in (True, False):
        model.train(training)
        assert projection_parameter_names(model) == ["fc.0.weight", "fc.0.bias"]
        assert model.training is training


@pytest.mark.parametrize("name", ["abmil", "transmil", "dsmil"])
def test_projection_names_probe_runs_on_the_models_device(name):
    # no GPU here: the meta device stands in for CUDA, and mixing it with a CPU probe raises,
    # so a probe built without the parameters' device fails this test
    model = create_model(name, in_dim=16, n_classes=2)
    on_cpu = projection_parameter_names(model)
    assert on_cpu and projection_parameter_names(model.to("meta")) == on_cpu


def test_init_student_none_and_all_and_errors():
    student, base = _abmil(0), _abmil(1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    assert init_student(student, base.state_dict(), "none") == []
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())
    assert init_student(student, base.state_dict(), "all") == list(base.state_dict())
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in student.state_dict().items())
    with pytest.raises(
        ValueError, match=r"^init_student must be projection, all or none, got 'head'$"
    ):
        init_student(student, base.state_dict(), "head")


def test_ema_update_boundaries_and_errors():
    student, other = _abmil(0), _abmil(1)
    teacher = build_teacher(student, other.state_dict())
    ema_update(teacher, student, 1.0)  # momentum 1: the teacher does not move
    assert all(
        torch.equal(a, b) for a, b in zip(teacher.parameters(), other.parameters(), strict=True)
    )
    ema_update(teacher, student, 0.0)  # momentum 0: the teacher becomes the student
    assert all(
        torch.equal(a, b) for a, b in zip(teacher.parameters(), student.parameters(), strict=True)
    )
    for m in (-0.1, 1.5):
        with pytest.raises(ValueError, match=rf"^momentum must be in \[0, 1\], got {m}$"):
            ema_update(teacher, student, m)


def test_ema_update_copies_buffers():
    student, teacher = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    student.running_mean.fill_(2.0)
    student.weight.data.fill_(3.0)
    ema_update(teacher, student, 0.5)
    assert torch.equal(teacher.running_mean, torch.full((3,), 2.0))
    assert torch.equal(teacher.weight, torch.full((3,), 2.0))  # 0.5 * 1 + 0.5 * 3


def test_momentum_at_by_hand():
    assert momentum_at(0.99, 3, 0, "cosine") == 0.99  # no schedule length: constant
    assert momentum_at(0.99, 3, 10) == 0.99
    assert momentum_at(0.99, 15, 10, "cosine") == pytest.approx(1.0)  # clamped after the end
    assert momentum_at(0.99, -3, 10, "cosine") == pytest.approx(0.99)  # and before the start
    expected = 1.0 - 0.01 * (1.0 + math.cos(math.pi * 0.25)) / 2.0
    assert momentum_at(0.99, 2.5, 10, "cosine") == pytest.approx(expected, abs=1e-12)
    assert isinstance(momentum_at(1, 0, 10), float)
    # a one-epoch schedule still ends at 1 (only a length of 0 means "no schedule")
    assert momentum_at(0.99, 1, 1, "cosine") == pytest.approx(1.0)
    assert momentum_at(0.99, 0, 1, "cosine") == pytest.approx(0.99)
    with pytest.raises(
        ValueError, match=r"^momentum_schedule must be constant or cosine, got 'linear'$"
    ):
        momentum_at(0.99, 3, 10, "linear")


def test_half_life_momentum_by_hand():
    assert half_life_momentum(2.0, 5) == pytest.approx(0.5**0.1, abs=1e-15)
    assert half_life_momentum(1.0, 1) == 0.5
    m = half_life_momentum(0.5, 4)  # two steps halve the gap
    assert m * m == pytest.approx(0.5)
    msg = r"^need half_life_epochs > 0 and steps_per_epoch >= 1, got {}, {}$"
    with pytest.raises(ValueError, match=msg.format(0, 3)):
        half_life_momentum(0, 3)
    with pytest.raises(ValueError, match=msg.format(1.0, 0)):
        half_life_momentum(1.0, 0)


def test_flat_parameters_and_relative_distance_by_hand():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0]]))
        model.bias.fill_(4.0)
    ref = flat_parameters(model)
    assert ref.tolist() == [3.0, 0.0, 4.0] and ref.dtype == torch.float32
    assert relative_distance(model, ref) == 0.0
    with torch.no_grad():
        model.weight[0, 1] = 10.0  # the copy does not follow the model
    assert ref.tolist() == [3.0, 0.0, 4.0]
    assert relative_distance(model, ref) == pytest.approx(10.0 / 5.0)
    zero = torch.zeros(3)
    assert relative_distance(model, zero) == pytest.approx(math.sqrt(9 + 100 + 16))
    # a reference of norm below 1 is still divided by (relative, not absolute, distance)
    small = torch.tensor([0.3, 0.0, 0.4])  # norm 0.5
    expected = math.sqrt(2.7**2 + 10.0**2 + 3.6**2) / 0.5
    assert relative_distance(model, small) == pytest.approx(expected)
    double = nn.Linear(2, 1).double()
    assert flat_parameters(double).dtype == torch.float32


def test_consistency_loss_batch_mean_and_detached_teacher():
    fs = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    ft = torch.tensor([[0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    tau = 0.5

    def one(s, t):
        et = [math.exp(v / tau) for v in t]
        pt = [v / sum(et) for v in et]
        lse = math.log(sum(math.exp(v) for v in s))
        return -sum(p * (v - lse) for p, v in zip(pt, s, strict=True))

    loss = consistency_loss(fs, ft, tau)
    expected = (one([1.0, 0.0], [0.0, 1.0]) + one([0.0, 2.0], [1.0, 1.0])) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert ft.grad is None and fs.grad is not None


def test_recycle_defaults_and_errors():
    grn = GlobalRecycle(16)
    assert grn.n_queries == 1 and grn.momentum == 0.9998
    assert grn.attn.num_heads == 8 and grn.attn.dropout == 0.0 and grn.out_drop.p == 0.0
    expected = torch.randn(1, 16, generator=torch.Generator().manual_seed(0)) * 0.02
    assert torch.equal(grn.queries, expected)
    assert GlobalRecycle(16, n_queries=3, heads=4, momentum=0.0, seed=2).n_queries == 3
    assert GlobalRecycle(16, momentum=1.0).momentum == 1.0
    # the dropout reaches the attention as well as the output (mutation survivor)
    assert GlobalRecycle(16, dropout=0.25).attn.dropout == 0.25
    assert not GlobalRecycle(16).apply_ema()  # nothing pending before a forward
    with pytest.raises(ValueError, match="^n_queries must be >= 1, got 0$"):
        GlobalRecycle(16, n_queries=0)
    with pytest.raises(ValueError, match="^dim 12 must be divisible by heads 8$"):
        GlobalRecycle(12)
    for m in (-0.1, 1.1):
        with pytest.raises(ValueError, match=rf"^query momentum must be in \[0, 1\], got {m}$"):
            GlobalRecycle(16, momentum=m)


def test_recycle_forward_replayed_with_its_layers_and_batched_ema():
    torch.manual_seed(0)
    grn = GlobalRecycle(8, n_queries=2, heads=2, momentum=0.75)
    with torch.no_grad():  # a non-trivial layer norm, so a missing norm shows
        grn.norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
        grn.norm.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    h = torch.randn(2, 5, 8) * 3 + 1
    q0 = grn.queries.clone()
    out = grn(h)
    ln = nn.functional.layer_norm
    q = ln(q0, (8,), grn.norm.weight, grn.norm.bias).unsqueeze(0).expand(2, -1, -1)
    kv = ln(h, (8,), grn.norm.weight, grn.norm.bias)
    ref, _ = grn.attn(q, kv, kv)
    assert out.shape == (2, 2, 8)
    assert torch.allclose(out, ref, atol=1e-6)
    assert grn.apply_ema()
    assert torch.allclose(grn.queries, 0.75 * q0 + 0.25 * ref.detach().mean(0), atol=1e-6)
