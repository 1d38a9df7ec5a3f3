"""EMA formula, frozen teacher, recycle queries moved only by EMA, consistency loss by hand."""

from __future__ import annotations

import math

import pytest
import torch

from histomil.models import create_model
from histomil.objectives.mhim.recycle import GlobalRecycle
from histomil.objectives.mhim.teacher import (
    build_teacher,
    consistency_loss,
    ema_update,
    init_student,
    momentum_at,
    projection_parameter_names,
)


def _abmil(seed: int):
    torch.manual_seed(seed)
    return create_model("abmil", in_dim=12, n_classes=1, hidden=16, attn_dim=8)


def test_ema_update_matches_the_formula() -> None:
    student, other = _abmil(0), _abmil(1)
    teacher = build_teacher(student, other.state_dict())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    m = 0.9
    ema_update(teacher, student, m)
    for name, p in teacher.named_parameters():
        expected = m * before[name] + (1 - m) * dict(student.named_parameters())[name]
        assert torch.allclose(p, expected, atol=1e-7)


def test_momentum_schedules() -> None:
    assert momentum_at(0.99, 3, 10) == 0.99
    assert momentum_at(0.99, 0, 10, "cosine") == pytest.approx(0.99)
    assert momentum_at(0.99, 10, 10, "cosine") == pytest.approx(1.0)
    assert momentum_at(0.99, 5, 10, "cosine") == pytest.approx(0.995)


def test_teacher_is_frozen_and_gets_no_gradient() -> None:
    student = _abmil(0)
    teacher = build_teacher(student, _abmil(1).state_dict())
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(1, 9, 12)
    loss = consistency_loss(student(x).embedding, teacher(x).embedding, 0.1)
    loss = loss + teacher(x).logits.sum() * 0  # even if a teacher output enters the loss
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


def test_only_the_projection_is_initialised_from_the_baseline() -> None:
    student, base = _abmil(0), _abmil(1)
    names = projection_parameter_names(student)
    assert names == ["fc.0.weight", "fc.0.bias"]
    copied = init_student(student, base.state_dict())
    assert copied == names
    for name, p in student.named_parameters():
        same = torch.equal(p, base.state_dict()[name])
        assert same == (name in names)


def test_consistency_loss_against_a_hand_computation() -> None:
    fs = torch.tensor([[1.0, 0.0, -1.0]])
    ft = torch.tensor([[0.2, 0.1, 0.0]])
    tau = 0.1
    et = [math.exp(v / tau) for v in (0.2, 0.1, 0.0)]
    pt = [v / sum(et) for v in et]
    lse = math.log(sum(math.exp(v) for v in (1.0, 0.0, -1.0)))
    expected = -sum(p * (s - lse) for p, s in zip(pt, (1.0, 0.0, -1.0), strict=True))
    assert float(consistency_loss(fs, ft, tau)) == pytest.approx(expected, rel=1e-6)


def test_recycle_queries_change_only_by_ema() -> None:
    torch.manual_seed(0)
    grn = GlobalRecycle(16, n_queries=2, heads=8, momentum=0.9)
    assert "queries" not in dict(grn.named_parameters())
    assert not grn.queries.requires_grad
    opt = torch.optim.SGD([p for p in grn.parameters() if p.requires_grad], lr=1.0)
    q0 = grn.queries.clone()
    out = grn(torch.randn(1, 5, 16))
    assert out.shape == (1, 2, 16)
    out.pow(2).sum().backward()
    opt.step()
    assert torch.equal(grn.queries, q0)  # the optimizer did not move them
    assert grn.attn.in_proj_weight.grad is not None  # the attention is trained by gradient
    assert grn.apply_ema()
    assert torch.allclose(grn.queries, 0.9 * q0 + 0.1 * out.detach()[0], atol=1e-6)
    assert not grn.apply_ema()  # nothing pending: no second update
    grn.eval()
    grn(torch.randn(1, 5, 16))
    assert not grn.apply_ema()  # inference never updates the queries


def test_recycle_dropout_setting() -> None:
    from histomil.objectives.mhim.config import RecycleConfig

    with pytest.raises(ValueError, match="dropout"):
        RecycleConfig(dropout=1.0)
    torch.manual_seed(0)
    grn = GlobalRecycle(16, n_queries=1, heads=8, dropout=0.5)
    h = torch.randn(1, 7, 16)
    a, b = grn(h), grn(h)
    assert not torch.equal(a, b)  # dropout active while training
    grn.eval()
    assert torch.equal(grn(h), grn(h))  # and off at inference
