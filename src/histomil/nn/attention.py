"""Attention scoring and pooling blocks shared by the MIL models."""

from __future__ import annotations

from torch import Tensor, nn

from histomil.nn.dropout import Dropout


class AttentionScorer(nn.Module):
    """Ilse et al. (2018) attention network: raw scores per instance and branch.

    Plain: ``w^T tanh(V h)``; gated: ``w^T (tanh(V h) * sigmoid(U h))``. Returns the
    pre-softmax scores (B, N, R) with one column per branch.
    """

    def __init__(
        self,
        in_dim: int,
        attn_dim: int = 128,
        branches: int = 1,
        gated: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.gated = gated
        self.v = nn.Sequential(nn.Linear(in_dim, attn_dim), nn.Tanh(), Dropout(dropout))
        self.u = (
            nn.Sequential(nn.Linear(in_dim, attn_dim), nn.Sigmoid(), Dropout(dropout))
            if gated
            else None
        )
        self.w = nn.Linear(attn_dim, branches)

    def forward(self, h: Tensor) -> Tensor:
        """h (B, N, H) -> scores (B, N, R)."""
        a = self.v(h)  # (B, N, A)
        if self.u is not None:
            a = a * self.u(h)
        return self.w(a)  # (B, N, R)


def weighted_sum(h: Tensor, weights: Tensor) -> Tensor:
    """Attention pooling: h (B, N, H), weights (B, N, R) -> (B, R, H)."""
    return weights.transpose(1, 2) @ h
