"""The momentum teacher: built from a trained baseline, frozen, updated only by EMA.

Paper (Sec. 3.5, Algorithm 2): the teacher has the student's architecture and is initialised
from a trained baseline ("Init."); after every optimizer step
``theta_t <- m * theta_t + (1 - m) * theta_s`` ("Momentum", m = 0.9999). The student's first
fully connected layer (the projection, ``MILModel.project``) is initialised from the same
baseline (Sec. 4.5.4, "Initialization of Student Model"); the rest of the student starts from
its own random initialisation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from histomil.models.base import MILModel


def build_teacher(student: MILModel, state: Mapping[str, Any] | None) -> MILModel:
    """Deep copy of ``student`` loaded from ``state`` (if given), frozen and in eval mode."""
    teacher = copy.deepcopy(student)
    if state is not None:
        teacher.load_state_dict(dict(state))
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def projection_parameter_names(model: MILModel) -> list[str]:
    """Names of the parameters used by ``model.project`` (found through autograd, so any model
    that honours the contract works without naming its layers)."""
    named = [(n, p) for n, p in model.named_parameters()]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = torch.zeros(1, 2, model.in_dim, device=named[0][1].device).normal_()
            out = model.project(x).sum()
            grads = torch.autograd.grad(
                out, [p for _, p in named if p.requires_grad], allow_unused=True
            )
    finally:
        model.train(was_training)
    trainable = [n for n, p in named if p.requires_grad]
    return [n for n, g in zip(trainable, grads, strict=True) if g is not None]


def init_student(
    student: MILModel, state: Mapping[str, Any], which: str = "projection"
) -> list[str]:
    """Copy baseline weights into the student: ``projection`` (paper), ``all`` or ``none``.

    Returns the names of the tensors copied.
    """
    if which == "none":
        return []
    if which == "all":
        student.load_state_dict(dict(state))
        return list(state)
    if which != "projection":
        raise ValueError(f"init_student must be projection, all or none, got {which!r}")
    names = projection_parameter_names(student)
    params = dict(student.named_parameters())
    with torch.no_grad():
        for name in names:
            params[name].copy_(state[name])
    return names


@torch.no_grad()
def ema_update(teacher: MILModel, student: MILModel, momentum: float) -> None:
    """``theta_t <- m * theta_t + (1 - m) * theta_s`` for every parameter; buffers are copied."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    for p_t, p_s in zip(teacher.parameters(), student.parameters(), strict=True):
        p_t.mul_(momentum).add_(p_s.detach(), alpha=1.0 - momentum)
    for b_t, b_s in zip(teacher.buffers(), student.buffers(), strict=True):
        b_t.copy_(b_s)


def momentum_at(base: float, epoch: int, max_epochs: int, schedule: str = "constant") -> float:
    """EMA momentum for ``epoch``: constant, or cosine from ``base`` (epoch 0) to 1 (the end),
    ``1 - (1 - base) * (1 + cos(pi * epoch / max_epochs)) / 2`` (BYOL-style)."""
    if schedule == "constant" or max_epochs <= 0:
        return float(base)
    if schedule != "cosine":
        raise ValueError(f"momentum_schedule must be constant or cosine, got {schedule!r}")
    t = min(max(epoch / max_epochs, 0.0), 1.0)
    return float(1.0 - (1.0 - base) * (1.0 + math.cos(math.pi * t)) / 2.0)


def half_life_momentum(half_life_epochs: float, steps_per_epoch: int) -> float:
    """Per-step EMA momentum that halves the teacher-student gap every ``half_life_epochs``:
    ``0.5 ** (1 / (half_life_epochs * steps_per_epoch))``."""
    if half_life_epochs <= 0 or steps_per_epoch < 1:
        raise ValueError(
            f"need half_life_epochs > 0 and steps_per_epoch >= 1, got {half_life_epochs}, "
            f"{steps_per_epoch}"
        )
    return float(0.5 ** (1.0 / (half_life_epochs * steps_per_epoch)))


def flat_parameters(model: MILModel) -> Tensor:
    """All parameters of ``model`` as one detached float32 vector (a copy)."""
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters()]).clone()


def relative_distance(model: MILModel, reference: Tensor) -> float:
    """``||theta - theta_ref|| / ||theta_ref||`` (0 when both are zero)."""
    now = flat_parameters(model).to(reference.device)
    norm = float(reference.norm())
    return float((now - reference).norm()) / norm if norm > 0 else float((now - reference).norm())


def consistency_loss(student_emb: Tensor, teacher_emb: Tensor, tau: float) -> Tensor:
    """``-softmax(F_t / tau) . log_softmax(F_s)`` summed over the embedding, mean over the batch.

    student_emb, teacher_emb: (B, E); the teacher side is detached.
    """
    target = torch.softmax(teacher_emb.detach() / tau, dim=-1)
    return -(target * torch.log_softmax(student_emb, dim=-1)).sum(dim=-1).mean()
