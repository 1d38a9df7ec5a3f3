"""Global recycle network (GRN, paper Sec. 3.4, Eq. 10-11).

``K`` global queries ``Q_G`` (K, D) cross-attend (multi-head, 8 heads) to the instances removed
by large-scale random masking: ``Z~_m = MCA(Q_G, Z^_m)`` (K, D), appended to the kept instances.
The attention weights (query/key/value/output projections, layer norm) are trained by gradient;
``Q_G`` is a buffer (never a parameter, so no optimizer can touch it) updated only by EMA toward
the attention outputs, ``Q_G <- lambda_q * Q_G + (1 - lambda_q) * Z~_m`` (mean over the batch).

The EMA is applied by :meth:`GlobalRecycle.apply_ema` after the optimizer step (the outputs of
the last training forward are remembered): updating the queries inside ``forward`` would modify
a tensor that autograd still needs for the backward pass.

Defaults follow the authors' code where the paper gives no number: K = 1 query
(``--merge_k``), lambda_q = 0.9998 (``--merge_mm``), layer norm on queries and instances.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from histomil.nn.dropout import Dropout


class GlobalRecycle(nn.Module):
    """Cross-attention from ``n_queries`` EMA-updated global queries to masked instances."""

    def __init__(
        self,
        dim: int,
        n_queries: int = 1,
        heads: int = 8,
        momentum: float = 0.9998,
        dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"query momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("queries", torch.randn(n_queries, dim, generator=gen) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.out_drop = Dropout(dropout)  # on the output too, as the authors' MCA
        self._pending: Tensor | None = None

    @property
    def n_queries(self) -> int:
        return int(self.queries.shape[0])

    def forward(self, h: Tensor) -> Tensor:
        """h (B, M, D) masked instances (M >= 1) -> recycled tokens (B, K, D)."""
        q = self.norm(self.queries).unsqueeze(0).expand(h.shape[0], -1, -1)  # (B, K, D)
        kv = self.norm(h)
        if self.training and self.attn.dropout > 0:  # dropout on the attention weights
            out, _ = self.attn(q, kv, kv, need_weights=False)  # (B, K, D)
        else:
            out = self._factored(q, kv)
        out = self.out_drop(out)
        if self.training:
            self._pending = out.detach().mean(dim=0)  # (K, D) EMA target
        return out

    def _factored(self, q: Tensor, kv: Tensor) -> Tensor:
        """``self.attn(q, kv, kv)`` with the key and value projections moved to the query side.

        With K << D queries, projecting all M instances to keys and values costs 2 M D^2
        multiply-adds (forward; twice more backward); here each head's query is mapped back
        through the key weights once, ``s = (q_h W_k,h) kv^T + q_h . b_k,h``, and the
        attention-weighted instances are projected after pooling, ``o_h = (a_h kv) W_v,h^T +
        b_v,h`` (the weights of a head sum to 1): 2 M D K H multiply-adds, the same function of
        the same parameters (``nn.MultiheadAttention``'s, so checkpoints are unchanged). Written
        by hand because torch has no fused kernel for this shape of attention.
        q (B, K, D), kv (B, M, D) -> (B, K, D).
        """
        mha = self.attn
        b, k, d = q.shape
        heads = mha.num_heads
        hd = d // heads
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)  # (D, D) each
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        qh = (q @ w_q.t() + b_q).reshape(b, k, heads, hd).transpose(1, 2)  # (B, H, K, hd)
        qh = qh * hd**-0.5
        u = torch.einsum("bhkc,hcd->bhkd", qh, w_k.reshape(heads, hd, d))  # (B, H, K, D)
        bias = torch.einsum("bhkc,hc->bhk", qh, b_k.reshape(heads, hd))  # (B, H, K)
        scores = (u.reshape(b, heads * k, d) @ kv.transpose(1, 2)).reshape(b, heads, k, -1)
        attn = torch.softmax(scores + bias[..., None], dim=-1)  # (B, H, K, M)
        pooled = attn.reshape(b, heads * k, -1) @ kv  # (B, H*K, D)
        pooled = pooled.reshape(b, heads, k, d)
        vals = torch.einsum("bhkd,hcd->bkhc", pooled, w_v.reshape(heads, hd, d))
        out = vals.reshape(b, k, d) + b_v  # (B, K, D)
        return mha.out_proj(out)

    @torch.no_grad()
    def apply_ema(self) -> bool:
        """Move the queries toward the last training outputs; True if an update happened."""
        if self._pending is None:
            return False
        self.queries.mul_(self.momentum).add_(self._pending, alpha=1.0 - self.momentum)
        self._pending = None
        return True
