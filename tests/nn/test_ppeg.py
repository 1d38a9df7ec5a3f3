"""PPEG as one merged depthwise convolution (issue 17), checked against the three-convolution
form it replaced (kept here as the reference) on outputs and on the gradients of the input and
of each kernel and bias."""

from __future__ import annotations

import pytest
import torch

from histomil.nn.nystrom import PPEG


def _reference(m: PPEG, x: torch.Tensor, side: int) -> torch.Tensor:
    """``PPEG.forward`` before issue 17."""
    b, _, c = x.shape
    cls, feat = x[:, :1], x[:, 1:]
    grid = feat.transpose(1, 2).reshape(b, c, side, side)
    grid = grid + sum(conv(grid) for conv in m.convs)
    return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


@pytest.mark.parametrize(("b", "side", "dim"), [(1, 5, 4), (2, 9, 6), (1, 1, 3)])
def test_merged_kernel_equals_the_three_convolutions(b, side, dim):
    torch.manual_seed(side)
    m = PPEG(dim).double()
    x = torch.randn(b, 1 + side * side, dim, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, new = _reference(m, xa, side), m(xb, side)
    torch.testing.assert_close(new, ref)
    g = torch.randn_like(ref)
    params = list(m.parameters())
    ga = torch.autograd.grad(ref, [xa, *params], g)
    gb = torch.autograd.grad(new, [xb, *params], g)
    for a, bb in zip(ga, gb, strict=True):
        torch.testing.assert_close(bb, a)


def test_float32_within_float32_tolerance_at_transmil_size():
    torch.manual_seed(0)
    m = PPEG(64)
    x = torch.randn(1, 1 + 30 * 30, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x, 30), _reference(m, x, 30), rtol=1e-5, atol=1e-5)


def test_state_dict_keys_are_the_three_convolutions():
    keys = sorted(PPEG(4).state_dict())
    assert keys == [f"convs.{i}.{n}" for i in range(3) for n in ("bias", "weight")]
