"""The instance projection ``Linear + ReLU + Dropout`` as one autograd node on the CPU.

Every model of the zoo starts with this block on all N instances, so after the matrix
multiplies its elementwise work is the largest per-step cost that grows with the bag (issue 17).
As three modules it makes three (N, H) tensors (the linear output, the ReLU output, the dropout
output) and keeps two of them plus the float mask for the backward pass; its backward makes two
more (the dropout's and the ReLU's). Here the ReLU and the dropout mask are applied in place on
the linear output, and only that output is kept: where it is positive the element was kept and
its input was positive, so the backward pass is ``grad * (y > 0) / (1 - p)``, one
``threshold_backward`` and an in-place scale. The same mask and the same arithmetic as
:class:`torch.nn.Sequential` of the three modules (:mod:`histomil.nn.dropout` draws the mask), so
outputs agree exactly and gradients to float32 rounding; at N = 8,000, H = 512 it keeps 32 MB
less for the backward pass. Hand-written because torch has no fused CPU kernel for it (nothing
to call in a library); ``tests/nn/test_projection.py`` checks it against the three modules.

Anywhere else (autocast, other devices, half precision, evaluation without grad, double
backward) the module runs as the plain sequence.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from histomil.nn.dropout import Dropout, scaled_keep_mask


class _LinearReLUDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, weight, bias, mask, scale, rows):  # noqa: D102
        xs = x2 if rows is None else x2.index_select(0, rows)
        y = torch.addmm(bias, xs, weight.t()) if bias is not None else xs @ weight.t()
        if mask is not None:  # 0 or 1 / (1 - p), as torch's dropout
            y.mul_(mask)
        # then ReLU, in place: relu(z * m) = relu(z) * m for m >= 0
        y.clamp_min_(0)
        ctx.scale = scale
        ctx.has_bias = bias is not None
        ctx.rows = rows
        ctx.save_for_backward(x2, weight, y)  # x2, not the selected copy: see Projection.forward
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: D102
        x2, weight, y = ctx.saved_tensors
        gz = torch.ops.aten.threshold_backward(grad, y, 0)
        if ctx.scale != 1.0:
            gz.mul_(ctx.scale)
        rows = ctx.rows
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = gz @ weight
            if rows is not None:  # index_select's backward
                gx = x2.new_zeros(x2.shape).index_add_(0, rows, gx)
        if ctx.needs_input_grad[1]:
            gw = gz.t() @ (x2 if rows is None else x2.index_select(0, rows))
        gb = gz.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None


class Projection(nn.Sequential):
    """``nn.Sequential(Linear(in_dim, out_dim, bias), ReLU(), Dropout(p))``: the same modules,
    indices and state-dict keys, computed by one fused autograd node when training on the CPU."""

    def __init__(self, in_dim: int, out_dim: int, p: float, bias: bool = True) -> None:
        super().__init__(nn.Linear(in_dim, out_dim, bias=bias), nn.ReLU(), Dropout(p))

    def _fused(self, x: Tensor) -> bool:
        lin = self[0]
        return (
            type(lin) is nn.Linear  # not replaced (e.g. by a LoRA or quantised layer)
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and lin.weight.dtype == x.dtype
            and torch.is_grad_enabled()
            and (x.requires_grad or lin.weight.requires_grad)
            and not torch.is_autocast_enabled("cpu")
            and not self[2].inplace
        )

    def forward(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """(B, N, in) -> (B, N, out); with ``rows`` (n,) only those instances: the same as
        ``forward(x.index_select(1, rows))``, but the fused node keeps ``x`` (which the caller
        holds anyway) instead of the selected copy and selects again in the backward pass.
        MHIM-v2's student projects all but a few instances of the bag this way: the copy was
        its largest tensor kept for the backward pass beside the model's own (31 MiB at
        N = 8,000, 1024-d; issue 17)."""
        if rows is not None and x.dim() != 3:
            raise ValueError(f"rows select instances of (B, N, D) bags; got shape {tuple(x.shape)}")
        if rows is not None and not (self._fused(x) and x.is_contiguous()):
            x, rows = x.index_select(1, rows), None  # select first: nothing to save by keeping x
        if not self._fused(x):
            return super().forward(x)
        lin, drop = self[0], self[2]
        p = drop.p if drop.training else 0.0
        x2 = x.reshape(-1, x.shape[-1])
        shape, flat = x.shape[:-1], None
        if rows is not None:  # row indices into the flattened (B * N, in) input
            rows = rows.to(x.device)
            shape = (x.shape[0], rows.numel())
            flat = (torch.arange(x.shape[0], device=x.device)[:, None] * x.shape[1] + rows).view(-1)
        count = math.prod(shape)
        mask, scale = None, 1.0
        if p > 0.0:  # the same draw as histomil.nn.dropout.dropout
            mask = scaled_keep_mask(count * lin.out_features, p, x.dtype)
            mask, scale = mask.view(count, lin.out_features), 1.0 / (1.0 - p)
        y = _LinearReLUDropout.apply(x2, lin.weight, lin.bias, mask, scale, flat)
        return y.view(*shape, lin.out_features)
