"""The fused instance projection (issue 17) against the three modules it replaces.

The reference is ``nn.Sequential(Linear, ReLU, Dropout)`` with the same weights and the same
mask draw (the same seed): outputs must be equal and gradients equal to float rounding, for
inputs of any leading shape, with and without bias, input gradient and dropout.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from histomil.models import create_model, names
from histomil.nn.dropout import Dropout
from histomil.nn.projection import Projection


def _pair(d, h, p, bias, dtype):
    torch.manual_seed(0)
    fused = Projection(d, h, p, bias=bias).to(dtype)
    ref = nn.Sequential(nn.Linear(d, h, bias=bias), nn.ReLU(), Dropout(p)).to(dtype)
    ref.load_state_dict(fused.state_dict())
    return fused, ref


def _fused_ran(y) -> bool:
    """Whether ``y`` came out of the fused autograd node (behind the reshaping view)."""
    fn = y.grad_fn
    while fn is not None and type(fn).__name__ == "ViewBackward0":
        fn = fn.next_functions[0][0]
    return fn is not None and type(fn).__name__ == "_LinearReLUDropoutBackward"


def _run(module, x, seed, grad_out):
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(x.requires_grad)
    torch.manual_seed(seed)
    y = module(x)
    y.backward(grad_out)
    return y.detach(), x.grad, {k: p.grad for k, p in module.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.0, 0.25, 0.7])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(50, 12), (2, 33, 12), (1, 1, 12)])
@pytest.mark.parametrize("input_grad", [False, True])
def test_fused_equals_the_three_modules(dtype, p, bias, shape, input_grad):
    fused, ref = _pair(shape[-1], 9, p, bias, dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(input_grad)
    g = torch.randn(*shape[:-1], 9, generator=gen, dtype=dtype)
    y1, gx1, gp1 = _run(fused.train(), x, 7, g)
    y2, gx2, gp2 = _run(ref.train(), x, 7, g)
    assert torch.equal(y1, y2)  # the same mask, the same arithmetic
    assert (y1 == 0).any() and (y1 > 0).any()
    if input_grad:
        assert gx1 is not None
        torch.testing.assert_close(gx1, gx2)
    else:
        assert gx1 is None and gx2 is None
    assert gp1.keys() == gp2.keys() == ({"0.weight", "0.bias"} if bias else {"0.weight"})
    for k in gp1:
        torch.testing.assert_close(gp1[k], gp2[k], msg=k)
    # the fused path ran: one node, and the next draw is where the unfused path leaves it
    torch.manual_seed(3)
    assert _fused_ran(fused(x))
    after_fused = torch.rand(1)
    torch.manual_seed(3)
    ref(x)
    assert torch.equal(after_fused, torch.rand(1))


def test_dropped_and_negative_elements_get_no_gradient_and_kept_ones_are_scaled():
    """By hand: y = relu(x W^T + b) * m, dy/dz = m where z > 0, else 0."""
    fused = Projection(3, 4, 0.5).train()
    with torch.no_grad():
        fused[0].weight.copy_(torch.eye(4, 3))
        fused[0].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    x = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], requires_grad=True)
    torch.manual_seed(0)
    y = fused(x)
    z = torch.tensor([[1.0, -2.0, 3.0, 1.0], [4.0, 5.0, -6.0, 1.0]])
    kept = (y != 0) | (z <= 0)  # where z <= 0 the mask is not visible in y
    torch.manual_seed(0)
    from histomil.nn.dropout import keep_mask

    m = keep_mask((2, 4), 0.5)
    assert torch.equal(y, torch.where(m, z.clamp_min(0) * 2, 0.0))
    assert kept[m].all()
    y.backward(torch.ones(2, 4))
    dz = torch.where(m & (z > 0), 2.0, 0.0)
    torch.testing.assert_close(fused[0].weight.grad, dz.t() @ x.detach())
    torch.testing.assert_close(fused[0].bias.grad, dz.sum(0))
    torch.testing.assert_close(x.grad, dz @ torch.eye(4, 3))


def test_falls_back_where_it_does_not_apply():
    fused, ref = _pair(6, 5, 0.25, True, torch.float32)
    x = torch.randn(4, 6)
    with torch.no_grad():  # no autograd: the plain modules (no fused node to build)
        torch.manual_seed(2)
        a = fused.train()(x)
        torch.manual_seed(2)
        assert torch.equal(a, ref.train()(x))
    fused.eval()
    assert _fused_ran(fused(x))
    torch.testing.assert_close(fused(x), ref.eval()(x))  # evaluation: no dropout, still fused
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused.train()(x)
    assert out.dtype == torch.bfloat16 and not _fused_ran(out)
    half = Projection(6, 5, 0.25).to(torch.bfloat16)
    out = half.train()(x.to(torch.bfloat16))
    assert out.grad_fn is not None and not _fused_ran(out)


def test_saves_only_its_output_for_backward():
    """The point of fusing: the ReLU output and the dropout mask are not kept (32 MB at
    N = 8,000 x 512 in float32); the input and weight are kept as by the Linear alone."""
    fused, ref = _pair(16, 64, 0.25, True, torch.float32)
    x = torch.randn(500, 16)

    def saved_bytes(module):
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        head = nn.Linear(64, 3)  # keeps the projection's output, in both
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            head(module.train()(x))
        return sum(seen.values())

    act = 500 * 64 * 4
    # the ReLU output and the mask, less the weight the fused node keeps (16 x 64 floats)
    assert saved_bytes(ref) - saved_bytes(fused) == 2 * act - 16 * 64 * 4


@pytest.mark.parametrize("name", names())
def test_every_projection_in_the_zoo_is_fused(name):
    model = create_model(name, 32, 1)
    plain = [
        n
        for n, m in model.named_modules()
        if type(m) is nn.Sequential
        and len(m) == 3
        and type(m[0]) is nn.Linear
        and type(m[1]) is nn.ReLU
    ]
    assert plain == [], plain
    assert type(model.fc) is Projection


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.0, 0.5])
@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("input_grad", [False, True])
def test_rows_equal_selecting_first(dtype, p, b, input_grad):
    """``fc(x, rows)`` is ``fc(x.index_select(1, rows))``: the same output (the same mask draw),
    the same gradients, for every bag of a batch, with repeated and unsorted rows."""
    fused, _ = _pair(12, 9, p, True, dtype)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(b, 40, 12, generator=gen, dtype=dtype).requires_grad_(input_grad)
    rows = torch.tensor([31, 2, 2, 17, 0, 39, 8])
    g = torch.randn(b, rows.numel(), 9, generator=gen, dtype=dtype)
    fused.train()

    def run(select_first):
        fused.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_(input_grad)
        torch.manual_seed(7)
        y = fused(xi.index_select(1, rows)) if select_first else fused(xi, rows)
        assert _fused_ran(y)
        y.backward(g)
        return y.detach(), xi.grad, {k: q.grad for k, q in fused.named_parameters()}

    y1, gx1, gp1 = run(False)
    y2, gx2, gp2 = run(True)
    assert y1.shape == (b, rows.numel(), 9) and torch.equal(y1, y2)
    assert (y1 == 0).any() and (y1 > 0).any()
    if input_grad:  # index_select's backward: a repeated row gets both gradients, others zero
        torch.testing.assert_close(gx1, gx2)
        unselected = torch.ones(40, dtype=torch.bool).index_fill_(0, rows, False)
        assert gx1[:, unselected].abs().sum() == 0 and gx1[:, rows].abs().sum() > 0
    else:
        assert gx1 is None and gx2 is None
    for k in gp1:
        torch.testing.assert_close(gp1[k], gp2[k], msg=k)


def test_rows_keep_the_input_not_a_copy_for_backward():
    """The point of ``rows``: the node keeps the caller's input (which exists anyway), not the
    selected copy, so a step keeps (n x in) floats less."""
    fused, _ = _pair(16, 64, 0.25, True, torch.float32)
    x = torch.randn(1, 500, 16)
    rows = torch.arange(0, 500, 2)

    def saved(select_first):
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fused.train()(x.index_select(1, rows)) if select_first else fused.train()(x, rows)
        return seen

    by_rows, by_copy = saved(False), saved(True)
    assert x.untyped_storage().data_ptr() in by_rows  # the input itself
    assert x.untyped_storage().data_ptr() not in by_copy
    copy = 250 * 16 * 4
    assert sum(by_copy.values()) - copy == sum(by_rows.values()) - x.untyped_storage().nbytes()


def test_rows_fall_back_to_selecting_first_where_the_fused_node_does_not_apply():
    fused, ref = _pair(6, 5, 0.25, True, torch.float32)
    x = torch.randn(2, 10, 6)
    rows = torch.tensor([9, 0, 4])
    with torch.no_grad():
        torch.manual_seed(2)
        a = fused.train()(x, rows)
        torch.manual_seed(2)
        assert torch.equal(a, ref.train()(x.index_select(1, rows)))
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)  # not contiguous: select first
    torch.manual_seed(2)
    y = fused(strided, rows)
    torch.manual_seed(2)
    assert _fused_ran(y) and torch.equal(y, fused(x.index_select(1, rows)))
    with pytest.raises(ValueError, match=r"\(B, N, D\) bags; got shape \(10, 6\)"):
        fused(x[0], rows)


@pytest.mark.parametrize("name", names())
def test_every_model_projects_selected_rows_as_the_selected_bag(name):
    model = create_model(name, 32, 1).train()
    x = torch.randn(1, 30, 32)
    rows = torch.tensor([5, 1, 29, 12])
    torch.manual_seed(0)
    a = model.project(x, rows)
    torch.manual_seed(0)
    assert torch.equal(a, model.project(x.index_select(1, rows)))
    model.fc = nn.Sequential(nn.Linear(32, 7))  # not a Projection: selected first
    assert model.project(x, rows).shape == (1, 4, 7)
