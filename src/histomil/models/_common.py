"""Small helpers shared by the model files (projection layer, heads)."""

from __future__ import annotations

from torch import nn

from histomil.nn.projection import Projection


def projection(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """The first instance projection ``Linear(in_dim, hidden) + ReLU + Dropout`` (B, N, D) -> (B, N, H).

    MHIM-v2 initialises exactly this layer from a trained baseline. One fused autograd node in
    CPU training (:class:`histomil.nn.projection.Projection`).
    """
    return Projection(in_dim, hidden, dropout)


def check_dropout(dropout: float) -> float:
    """Validate a dropout probability."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return float(dropout)
