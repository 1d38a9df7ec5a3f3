"""Building blocks: Nystrom attention, iterative pseudo-inverse, PPEG, attention scorer."""

from __future__ import annotations

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
