"""Building blocks: Nystrom attention, iterative pseudo-inverse, PPEG, attention scorer."""

from __future__ import annotations

import pytest
import torch

from histomil.nn.attention import AttentionScorer, weighted_sum
from histomil.nn.nystrom import PPEG, NystromAttention, iterative_pinv, square_side


def test_iterative_pinv_matches_linalg_pinv_for_softmax_kernels() -> None:
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(3, 6, 6), dim=-1).double()
    torch.testing.assert_close(
        iterative_pinv(a, iters=25), torch.linalg.pinv(a), atol=1e-6, rtol=1e-5
    )


def test_nystrom_is_exact_when_every_token_is_a_landmark() -> None:
    torch.manual_seed(0)
    attn = NystromAttention(16, heads=2, landmarks=10, pinv_iters=30, dropout=0.0).double().eval()
    torch.nn.init.zeros_(attn.res_conv.weight)
    x = torch.randn(2, 10, 16).double()
    q, k, v = attn.to_qkv(x).chunk(3, dim=-1)
    split = lambda t: t.view(2, 10, 2, 8).transpose(1, 2)  # noqa: E731
    full = torch.softmax(split(q) @ split(k).transpose(-1, -2) * 8**-0.5, -1) @ split(v)
    expected = attn.to_out(full.transpose(1, 2).reshape(2, 10, 16))
    out, logits = attn.forward_with_query_logits(x, index=0)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        logits, (split(q)[:, :, :1] @ split(k).transpose(-1, -2))[:, :, 0] * 8**-0.5
    )


def test_nystrom_handles_lengths_that_are_not_multiples_of_landmarks() -> None:
    attn = NystromAttention(8, heads=2, landmarks=4)
    for n in (1, 3, 5, 17):
        out, logits = attn.forward_with_query_logits(torch.randn(1, n, 8))
        assert out.shape == (1, n, 8) and logits.shape == (1, 2, n)
        assert torch.isfinite(out).all()


def test_ppeg_keeps_shape_and_class_token() -> None:
    ppeg = PPEG(4)
    x = torch.randn(2, 1 + 9, 4)
    y = ppeg(x, square_side(9))
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, 0], x[:, 0])
    assert square_side(10) == 4 and square_side(1) == 1


def test_attention_scorer_shapes_and_gating() -> None:
    h = torch.randn(2, 5, 8)
    for gated in (True, False):
        s = AttentionScorer(8, 4, branches=3, gated=gated)(h)
        assert s.shape == (2, 5, 3)
    w = torch.softmax(torch.randn(2, 5, 3), 1)
    torch.testing.assert_close(weighted_sum(h, w)[:, 1], (w[..., 1:2] * h).sum(1))


def _pinv_reference(a: torch.Tensor, iters: int) -> torch.Tensor:
    """The iteration written out one matrix at a time: ``z0 = a^T / (||a||_1 ||a||_inf)`` (each
    matrix its own norms), then ``z <- z (13 I - 15 az + 7 (az)^2 - (az)^3) / 4``."""
    flat = a.reshape(-1, *a.shape[-2:])
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    out = []
    for m in flat:
        z = m.T / (m.abs().sum(dim=0).max() * m.abs().sum(dim=1).max())
        for _ in range(iters):
            x = m @ z
            z = 0.25 * z @ (13 * eye - 15 * x + 7 * x @ x - x @ x @ x)
        out.append(z)
    return torch.stack(out).reshape(a.shape)


@pytest.mark.parametrize("iters", [1, 2, 6])
def test_iterative_pinv_matches_the_iteration_written_out_before_it_converges(iters) -> None:
    torch.manual_seed(iters)
    # softmax kernels of different sharpness, one of them not square-summing like the others:
    # after 1-2 iterations (and for the sharp ones after 6) the start still shows
    logits = (
        torch.randn(2, 3, 6, 6, dtype=torch.float64) * torch.tensor([0.5, 3.0, 8.0])[:, None, None]
    )
    a = torch.softmax(logits, dim=-1)
    a[1, 2] *= 5.0  # another scale: a batch-wide normalisation would change the others
    got = iterative_pinv(a, iters)
    torch.testing.assert_close(got, _pinv_reference(a, iters), rtol=1e-10, atol=1e-12)
    if iters == 6:
        torch.testing.assert_close(iterative_pinv(a), got, rtol=0, atol=0)  # 6 by default
    # per matrix: a bag's pseudo-inverse does not depend on the other matrices of the batch
    torch.testing.assert_close(iterative_pinv(a[1:, 2:], iters), got[1:, 2:], rtol=1e-12, atol=0)


def _pinv_by_autograd(a: torch.Tensor, iters: int) -> torch.Tensor:
    """``iterative_pinv`` before issue 17 kept fewer tensors: the loop differentiated by autograd."""
    abs_a = a.abs()
    col = abs_a.sum(dim=-1).amax(dim=-1, keepdim=True)
    row = abs_a.sum(dim=-2).amax(dim=-1, keepdim=True)
    z = a.transpose(-1, -2) / (col * row).unsqueeze(-1)
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def _eps(dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-6


def _saved_bytes(fn) -> int:
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("iters", [0, 1, 2, 6])
def test_iterative_pinv_gradient_is_autograds_of_the_loop(dtype, iters) -> None:
    """The hand-written backward pass: the same output and the same gradient as autograd of the
    loop (to float rounding), for a batch of kernels of different sharpness."""
    torch.manual_seed(10 + iters)
    scale = torch.tensor([0.5, 2.0, 6.0], dtype=dtype)[:, None, None, None]
    a0 = torch.softmax(torch.randn(3, 2, 24, 24, dtype=dtype) * scale, dim=-1)
    g = torch.randn(3, 2, 24, 24, dtype=dtype)
    got, want = [], []
    for fn, out in ((iterative_pinv, got), (_pinv_by_autograd, want)):
        a = a0.clone().requires_grad_()
        z = fn(a, iters)
        z.backward(g)
        out += [z.detach(), a.grad]
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)  # the same forward arithmetic
    # the products (c I - t) are taken as c X - X t: float rounding of the same sums, so the
    # tolerance is relative to the gradient's scale (up to ~1e3 for the sharp kernels)
    scale = float(want[1].abs().max())
    assert scale > 0
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=scale * _eps(dtype))
    with torch.no_grad():  # the plain loop when nothing is differentiated
        torch.testing.assert_close(iterative_pinv(a0, iters), got[0], rtol=0, atol=0)
    one = a0[1, 0].clone().requires_grad_()  # a single (M, M) matrix, no batch dimensions
    iterative_pinv(one, iters).backward(g[1, 0])
    torch.testing.assert_close(one.grad, want[1][1, 0], rtol=1e-5, atol=scale * _eps(dtype))


def test_iterative_pinv_keeps_four_matrices_per_iteration() -> None:
    """z and the three products of each iteration, not the differences with the identity nor
    ``z / 4``: 4 instead of 6 (M x M) matrices per iteration (48 MiB per TransMIL step)."""
    a = torch.softmax(torch.randn(2, 8, 32, 32), dim=-1).requires_grad_()
    mat = a.numel() * 4
    for iters in (1, 6):
        ours = _saved_bytes(lambda k=iters: iterative_pinv(a, k))
        loop = _saved_bytes(lambda k=iters: _pinv_by_autograd(a, k))
        small = 4 * (a.numel() // 32) * 4  # the start's column and row sums (vectors)
        assert ours <= (4 * iters + 1) * mat + small < loop
        assert loop - ours >= 2 * iters * mat


def test_nystrom_defaults_are_transmils() -> None:
    attn = NystromAttention(512)
    assert (attn.heads, attn.landmarks, attn.pinv_iters, attn.dim_head) == (8, 256, 6, 64)
    assert attn.scale == 64**-0.5 and attn.to_qkv.bias is None and attn.res_conv.bias is None
    assert attn.to_out[1].p == 0.1 and attn.res_conv.kernel_size == (33, 1)
    with pytest.raises(ValueError, match="divisible by heads 3"):
        NystromAttention(16, heads=3)


def test_nystrom_layer_passes_its_arguments_and_gives_the_class_token_logits() -> None:
    from histomil.nn.nystrom import NystromLayer

    torch.manual_seed(0)
    layer = NystromLayer(16, heads=2, landmarks=4, dropout=0.0).eval()
    assert (layer.attn.heads, layer.attn.landmarks, layer.attn.to_out[1].p) == (2, 4, 0.0)
    x = torch.randn(1, 9, 16)
    out, logits = layer.forward_with_query_logits(x)  # index 0 by default
    torch.testing.assert_close(out, x + layer.attn(layer.norm(x)))
    torch.testing.assert_close(out, layer(x))
    q, k, _ = (layer.attn._split(t) for t in layer.attn.to_qkv(layer.norm(x)).chunk(3, dim=-1))
    torch.testing.assert_close(
        logits, ((q[:, :, :1] * layer.attn.scale) @ k.transpose(-1, -2))[:, :, 0]
    )


def test_nystrom_layer_defaults_and_query_index() -> None:
    from histomil.nn.nystrom import NystromLayer

    assert (NystromLayer(64).attn.heads, NystromLayer(64).attn.landmarks) == (8, 256)
    torch.manual_seed(1)
    layer = NystromLayer(16, heads=2, landmarks=4, dropout=0.0).eval()
    x = torch.randn(1, 9, 16)
    _, logits = layer.forward_with_query_logits(x, index=3)
    torch.testing.assert_close(logits, layer.attn.forward_with_query_logits(layer.norm(x), 3)[1])
    assert not torch.allclose(logits, layer.forward_with_query_logits(x)[1])
