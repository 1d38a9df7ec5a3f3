"""Nystrom self-attention (Xiong et al., AAAI 2021) and TransMIL's PPEG, written for histomil.

Follows the configuration TransMIL uses: landmarks are segment means of the (front zero-padded)
sequence, the pseudo-inverse of the landmark kernel is computed with the iterative
Moore-Penrose scheme (6 iterations), and a depthwise 1-D convolution over the values
(kernel 33) is added as a residual. Deviation: the pseudo-inverse initialisation is
normalised per matrix rather than by the maximum over the whole batch, so a bag's output
does not depend on the other bags of the batch. The product of the three kernels with the
values is taken right to left, the two (n x landmarks) kernels applied by torch's fused
attention, so neither is stored (the same map up to float rounding). The pseudo-inverse
iterations are one autograd node that keeps 4 instead of 6 (landmarks x landmarks) matrices
per iteration for the backward pass, with the same output and gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from histomil.nn.dropout import Dropout


def _newton_schulz_step(a: Tensor, z: Tensor, eye: Tensor) -> tuple[Tensor, ...]:
    """One iteration ``z <- z/4 (13 I - az (15 I - az (7 I - az)))``, ``az = a z``: the next z
    and the three products ``az``, ``t2 = az (7 I - az)``, ``t4 = az (15 I - t2)``."""
    az = a @ z
    t2 = az @ (7 * eye - az)
    t4 = az @ (15 * eye - t2)
    return 0.25 * z @ (13 * eye - t4), az, t2, t4


class _NewtonSchulz(torch.autograd.Function):
    """The pseudo-inverse iterations as one autograd node that keeps only their products.

    Differentiated as written, each iteration keeps six (M, M) matrices for the backward pass:
    z, ``z / 4``, ``az`` and the three differences with the identity, 12 MiB per iteration for
    TransMIL's 8 heads x 256 landmarks, whatever the bag size. Here it keeps z and the three
    products; the differences (``7 I - az`` ...) and ``z / 4`` are recomputed elementwise in
    the backward pass, the same values, so no product is computed twice: 4 matrices per
    iteration instead of 6 (48 MiB less per step for TransMIL's two layers, issue 17). The
    backward pass is the chain rule of the four products written out (eight products, as
    autograd's, each ``X (c I - t)`` taken as one accumulating ``c X - X t``: about 0.9x
    autograd's time for the pseudo-inverse); ``tests/nn/test_blocks.py`` checks it against
    autograd of the loop.
    Hand-written because torch cannot be told to keep fewer tensors without recomputing
    products (``torch.utils.checkpoint`` would recompute all four).
    """

    @staticmethod
    def forward(ctx, a: Tensor, z: Tensor, iters: int) -> Tensor:  # noqa: D102
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        kept = []
        for _ in range(iters):
            nxt, az, t2, t4 = _newton_schulz_step(a, z, eye)
            kept += [z, az, t2, t4]
            z = nxt
        ctx.iters = iters
        ctx.save_for_backward(a, *kept)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor, None]:  # noqa: D102
        m = grad.shape[-1]
        a, *kept = (t.reshape(-1, m, m) for t in ctx.saved_tensors)  # (batch, M, M) views
        grad = grad.reshape(-1, m, m)
        grad_a = torch.zeros_like(a) if ctx.needs_input_grad[0] else None
        # products with (c I - t) are written c X - X t: one accumulating product (baddbmm)
        # and no (M, M) difference matrix; scaling by 1/4 is exact
        for i in reversed(range(ctx.iters)):
            z, az, t2, t4 = kept[4 * i : 4 * i + 4]
            # z' = (z / 4) (13 I - t4)
            grad_z = torch.baddbmm(grad, grad, t4.mT, beta=13, alpha=-1).mul_(0.25)
            grad_t4 = torch.bmm(z.mT, grad).mul_(-0.25)
            # t4 = az (15 I - t2)
            grad_az = torch.baddbmm(grad_t4, grad_t4, t2.mT, beta=15, alpha=-1)
            grad_t2 = torch.bmm(az.mT, grad_t4).neg_()
            # t2 = az (7 I - az): az enters as both factors
            grad_az.add_(grad_t2, alpha=7).baddbmm_(grad_t2, az.mT, alpha=-1)
            grad_az.baddbmm_(az.mT, grad_t2, alpha=-1)
            # az = a z
            if grad_a is not None:
                grad_a.baddbmm_(grad_az, z.mT)
            grad = grad_z.baddbmm_(a.mT, grad_az)
        shape = ctx.saved_tensors[0].shape
        return (None if grad_a is None else grad_a.view(shape)), grad.view(shape), None


def iterative_pinv(a: Tensor, iters: int = 6) -> Tensor:
    """Moore-Penrose pseudo-inverse of (..., M, M) matrices by Newton-Schulz-type iteration."""
    abs_a = a.abs()
    col = abs_a.sum(dim=-1).amax(dim=-1, keepdim=True)  # (..., 1)
    row = abs_a.sum(dim=-2).amax(dim=-1, keepdim=True)  # (..., 1)
    z = a.transpose(-1, -2) / (col * row).unsqueeze(-1)
    if torch.is_grad_enabled() and z.requires_grad:
        return _NewtonSchulz.apply(a, z, iters)
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    for _ in range(iters):
        z = _newton_schulz_step(a, z, eye)[0]
    return z


class NystromAttention(nn.Module):
    """Multi-head Nystrom attention over (B, N, dim) tokens, O(N * landmarks) memory."""

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        landmarks: int = 256,
        pinv_iters: int = 6,
        residual_kernel: int = 33,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.landmarks, self.pinv_iters = heads, landmarks, pinv_iters
        self.dim_head = dim // heads
        self.scale = self.dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), Dropout(dropout))
        self.res_conv = nn.Conv2d(
            heads,
            heads,
            (residual_kernel, 1),
            padding=(residual_kernel // 2, 0),
            groups=heads,
            bias=False,
        )

    def _split(self, t: Tensor) -> Tensor:
        # contiguous (B, h, n, d): each of q, k, v is read by several matrix products and the
        # landmark means, which copied a strided view once per use (issue 17)
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2).contiguous()

    def forward_with_query_logits(self, x: Tensor, index: int = 0) -> tuple[Tensor, Tensor]:
        """x (B, N, dim) -> (out (B, N, dim), logits (B, h, N)).

        ``logits`` are the exact scaled dot-product attention logits of token ``index`` (e.g. a
        class token) to every token, per head, before the softmax.
        """
        b, n, _ = x.shape
        m = self.landmarks
        pad = (m - n % m) % m
        if pad:
            x = F.pad(x, (0, 0, pad, 0))  # zeros at the front, as in TransMIL
        q, k, v = (self._split(t) for t in self.to_qkv(x).chunk(3, dim=-1))  # (B, h, n', d)
        # the 1/sqrt(d) scale of the queries is applied where it costs (m, d), not (n', d): to
        # the query landmarks and, for the full queries, inside the fused attention below
        seg = x.shape[1] // m
        q_l = q.reshape(b, self.heads, m, seg, self.dim_head).mean(dim=3) * self.scale
        k_l = k.reshape(b, self.heads, m, seg, self.dim_head).mean(dim=3)  # (B, h, m, d)
        a2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)  # (B, h, m, m)
        # out = softmax(q k_l^T s) pinv(a2) softmax(q_l k^T) v, multiplied right to left: the
        # two (n' x m) kernels are applied to (m x d) matrices by torch's fused attention, which
        # never stores them, and no (n' x m) @ (m x m) product is made (issue 17)
        a3v = F.scaled_dot_product_attention(q_l, k, v, scale=1.0)  # (B, h, m, d)
        w = iterative_pinv(a2, self.pinv_iters) @ a3v  # (B, h, m, d)
        out = F.scaled_dot_product_attention(q, k_l, w, scale=self.scale)  # (B, h, n', d)
        out = out + self.res_conv(v)
        out = out.transpose(1, 2).reshape(b, -1, self.heads * self.dim_head)[:, pad:]
        q_i = q[:, :, pad + index : pad + index + 1] * self.scale  # (B, h, 1, d)
        logits = q_i @ k[:, :, pad:].transpose(-1, -2)
        return self.to_out(out), logits[:, :, 0]  # (B, N, dim), (B, h, N)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, dim) -> (B, N, dim)."""
        return self.forward_with_query_logits(x)[0]


class NystromLayer(nn.Module):
    """TransMIL's TransLayer: ``x + NystromAttention(LayerNorm(x))`` (no MLP)."""

    def __init__(self, dim: int, heads: int = 8, landmarks: int = 256, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(dim, heads, landmarks, dropout=dropout)

    def forward_with_query_logits(self, x: Tensor, index: int = 0) -> tuple[Tensor, Tensor]:
        """(B, N, dim) -> ((B, N, dim), class-token logits (B, heads, N))."""
        out, logits = self.attn.forward_with_query_logits(self.norm(x), index)
        return x + out, logits

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, dim) -> (B, N, dim)."""
        return x + self.attn(self.norm(x))


class PPEG(nn.Module):
    """Pyramid position encoding generator: depthwise 7/5/3 convs on the token grid + identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, x: Tensor, side: int) -> Tensor:
        """x (B, 1 + side*side, dim) with a leading class token -> same shape.

        ``grid + conv7(grid) + conv5(grid) + conv3(grid)`` is computed as one depthwise 7 x 7
        convolution whose kernel is the sum of the three (the 5 x 5 and 3 x 3 kernels zero-padded
        to 7 x 7, centred, as their paddings align them) plus the identity at the centre, and
        whose bias is the sum of the biases: the same linear map, and autograd gives each
        kernel its share of the gradient. One depthwise convolution and its backward instead of
        three, and no layout copies between them: about half of PPEG's time at 8,000 instances
        (tests/nn/test_ppeg.py keeps the three-convolution form as the reference).
        """
        b, _, c = x.shape
        cls, feat = x[:, :1], x[:, 1:]
        grid = feat.transpose(1, 2).contiguous().view(b, c, side, side)  # (B, dim, side, side)
        w7, w5, w3 = (conv.weight for conv in self.convs)  # (dim, 1, k, k)
        kernel = w7 + F.pad(w5, (1, 1, 1, 1)) + F.pad(w3, (2, 2, 2, 2))
        kernel = kernel + F.pad(kernel.new_ones(c, 1, 1, 1), (3, 3, 3, 3))  # + identity
        bias = sum(conv.bias for conv in self.convs)
        out = F.conv2d(grid, kernel, bias, padding=3, groups=c)
        return torch.cat([cls, out.flatten(2).transpose(1, 2)], dim=1)


def square_side(n: int) -> int:
    """Side of the smallest square grid holding ``n`` tokens."""
    return max(1, math.ceil(math.sqrt(n)))
