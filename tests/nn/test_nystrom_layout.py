"""Nystrom attention with contiguous heads and the query scale moved to the landmarks (issue 17),
against the implementation before the change (kept here as the reference): outputs, class-token
logits and every gradient, for lengths that are and are not multiples of the landmarks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from histomil.nn.nystrom import NystromAttention, iterative_pinv


def _reference(self, x, index=0):
    b, n, _ = x.shape
    m = self.landmarks
    pad = (m - n % m) % m
    if pad:
        x = F.pad(x, (0, 0, pad, 0))

    def split(t):
        return t.view(b, t.shape[1], self.heads, self.dim_head).transpose(1, 2)

    q, k, v = (split(t) for t in self.to_qkv(x).chunk(3, dim=-1))
    q = q * self.scale
    seg = x.shape[1] // m
    q_l = q.reshape(b, self.heads, m, seg, self.dim_head).mean(dim=3)
    k_l = k.reshape(b, self.heads, m, seg, self.dim_head).mean(dim=3)
    a1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)
    a2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)
    a3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-1)
    out = (a1 @ iterative_pinv(a2, self.pinv_iters)) @ (a3 @ v)
    out = out + self.res_conv(v)
    out = out.transpose(1, 2).reshape(b, -1, self.heads * self.dim_head)[:, pad:]
    logits = q[:, :, pad + index : pad + index + 1] @ k[:, :, pad:].transpose(-1, -2)
    return self.to_out(out), logits[:, :, 0]


def _run(attn, fn, x, index):
    attn.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out, logits = fn(x, index)
    (out.sin().sum() + (logits * 0.7).cos().sum()).backward()
    return out.detach(), logits.detach(), x.grad, {k: p.grad for k, p in attn.named_parameters()}


def _assert_matches(reference, dtype, b, n, index, seed):
    """Outputs, class-token logits, input and parameter gradients of the current forward
    against ``reference(attn, x, index)``."""
    torch.manual_seed(seed)
    attn = NystromAttention(16, heads=2, landmarks=8, residual_kernel=5, dropout=0.0)
    attn = attn.to(dtype).eval()
    x = torch.randn(b, n, 16, dtype=dtype)
    got = _run(attn, attn.forward_with_query_logits, x, index)
    ref = _run(attn, lambda xx, i: reference(attn, xx, i), x, index)
    tol = {"rtol": 1e-9, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 1e-5}
    for a, r in zip(got[:3], ref[:3], strict=True):
        torch.testing.assert_close(a, r, **tol)
    assert got[3].keys() == ref[3].keys()
    for k in ref[3]:
        torch.testing.assert_close(got[3][k], ref[3][k], **tol, msg=k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("b", "n", "index"), [(1, 24, 0), (1, 29, 0), (2, 13, 3), (1, 5, 4)])
def test_layout_change_matches_the_reference(dtype, b, n, index):
    _assert_matches(_reference, dtype, b, n, index, seed=n)


def _materialized(self, x, index=0):
    """The forward before the fused attention (issue 17): contiguous heads, the query scale at
    the landmarks, and the (n' x m) kernels stored and multiplied left to right."""
    b, n, _ = x.shape
    m = self.landmarks
    pad = (m - n % m) % m
    if pad:
        x = F.pad(x, (0, 0, pad, 0))
    q, k, v = (self._split(t) for t in self.to_qkv(x).chunk(3, dim=-1))
    seg = x.shape[1] // m
    q_l = q.reshape(b, self.heads, m, seg, self.dim_head).mean(dim=3) * self.scale
    k_l = k.reshape(b, self.heads, m, seg, self.dim_head).mean(dim=3)
    a1 = torch.softmax(q @ (k_l * self.scale).transpose(-1, -2), dim=-1)
    a2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)
    a3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-1)
    out = (a1 @ iterative_pinv(a2, self.pinv_iters)) @ (a3 @ v)
    out = out + self.res_conv(v)
    out = out.transpose(1, 2).reshape(b, -1, self.heads * self.dim_head)[:, pad:]
    q_i = q[:, :, pad + index : pad + index + 1] * self.scale
    logits = q_i @ k[:, :, pad:].transpose(-1, -2)
    return self.to_out(out), logits[:, :, 0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("b", "n", "index"), [(1, 24, 0), (1, 29, 0), (2, 13, 3), (1, 300, 7)])
def test_fused_attention_matches_the_materialized_kernels(dtype, b, n, index):
    _assert_matches(_materialized, dtype, b, n, index, seed=n + 1)


def test_transmil_with_fused_attention_matches_the_materialized_kernels(monkeypatch):
    """The whole model at its real size (8 heads, 256 landmarks, 512-d) on a masked batch whose
    bags need padding to the landmarks: logits, scores and every parameter's gradient."""
    from histomil.models import create_model

    torch.manual_seed(0)
    model = create_model("transmil", 64, 2).train()
    x = torch.randn(2, 700, 64)
    mask = torch.ones(2, 700, dtype=torch.bool)
    mask[1, 450:] = False
    mask[1, 17] = False

    def run():  # the same seed: the attention's output dropout draws the same masks
        torch.manual_seed(1)
        model.zero_grad(set_to_none=True)
        out = model(x, mask=mask)
        (out.logits.square().sum() + out.scores.sin().sum()).backward()
        return out, {k: p.grad for k, p in model.named_parameters()}

    got, got_grads = run()
    monkeypatch.setattr(NystromAttention, "forward_with_query_logits", _materialized)
    ref, ref_grads = run()
    tol = {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(got.logits, ref.logits, **tol)
    torch.testing.assert_close(got.scores, ref.scores, **tol)
    assert not torch.equal(got.scores[0], got.scores[1][: got.scores.shape[1]])
    for k, g in ref_grads.items():
        assert g is not None, k
        torch.testing.assert_close(got_grads[k], g, **tol, msg=k)
