"""A :class:`torch.nn.TransformerEncoderLayer` whose attention is written out in training on CPU.

In training with dropout, torch's multi-head attention runs the math path and draws a Bernoulli
mask over every (batch x heads x L x L) attention map with its slow CPU generator: in the
HIPT-style model (256-token regions, 3 heads) that was 157 ms of a 2.4-s step at 8,000 instances.
Here the same computation (in-projection, scaled scores, key-padding mask, softmax, dropout on
the weights, weighted values, out-projection) is written out so that the dropout is
:func:`histomil.nn.dropout.dropout`. Without dropout (p = 0, e.g. HIPT's local stage) training
uses the same written-out attention: torch's fused CPU attention kernel (``scaled_dot_product_
attention``) was not faster for a HIPT step at 8,000 instances (1.64 s against 1.36 s with one
thread, 0.92 against 0.77 s with two; ``benchmarks/README.md``, "Floors"). Parameters and
state-dict keys are the parent's; in eval mode or with an ``attn_mask``/causal mask the parent's
code runs unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from histomil.nn.dropout import dropout, use_fast_dropout


class EncoderLayer(nn.TransformerEncoderLayer):
    """:class:`torch.nn.TransformerEncoderLayer` (same arguments, ``batch_first=True`` only) with
    written-out attention in training (the fast CPU dropout on its weights when p > 0) and the
    fast CPU dropout after each block."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.self_attn.batch_first:
            raise ValueError("EncoderLayer needs batch_first=True")
        use_fast_dropout(self)

    def _sa_block(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool = False,
    ) -> Tensor:
        attn = self.self_attn
        if not self.training or attn_mask is not None or is_causal or x.device.type != "cpu":
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal)
        p = attn.dropout
        b, n, d = x.shape
        h = attn.num_heads
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, h, d // h).transpose(1, 2) for t in (q, k, v))  # (b, h, n, e)
        scores = (q * (1.0 / math.sqrt(d // h))) @ k.transpose(-2, -1)  # (b, h, n, n)
        if key_padding_mask is not None:  # bool (True: ignore) or float (added), (b, n)
            pad = key_padding_mask[:, None, None, :]
            if pad.dtype == torch.bool:
                scores = scores.masked_fill(pad, float("-inf"))
            else:
                scores = scores + pad.to(scores.dtype)
        weights = torch.softmax(scores, dim=-1)
        if p > 0:
            weights = dropout(weights, p)
        out = (weights @ v).transpose(1, 2).reshape(b, n, d)
        return self.dropout1(attn.out_proj(out))
