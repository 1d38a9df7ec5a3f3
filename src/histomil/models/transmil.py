"""TransMIL (Shao et al., NeurIPS 2021): Nystrom transformer with a PPEG position encoding.

Architecture as in the paper: Linear(D, 512) + ReLU, a class token, Nystrom layer
(8 heads, 256 landmarks, residual value conv), PPEG (depthwise 7/5/3 convs on the tokens laid
on a square grid), a second Nystrom layer, LayerNorm and a linear head on the class token.
The sequence is padded to a square grid by repeating the bag's first tokens (cyclically).

Contract decisions:

- ``scores`` (B, N, 1): the class token's exact attention logits to each instance in the last
  layer, averaged over heads (the quantity the rank loss orders). ``weights`` is their masked
  softmax. TransMIL pools through its class token, not through these weights, so ``weights``
  is a diagnostic and **attention thresholding is rejected** (``attention_threshold > 0``
  raises) instead of silently doing nothing.
- ``extras["first_layer_logits"]`` (B, heads, 1 + s*s), for batches without padding: the class
  token's attention logits in the first layer, to the class token and to every grid token
  (instances, then the repeated ones), which MHIM's class-aware scoring reuses.
- Padded (masked) instances are removed before the transformer (bags of a batch are run one by
  one), so padding never changes a bag's output.
- Not permutation invariant: PPEG depends on where an instance lands on the square grid,
  i.e. on the instance order (as in the paper); tokens appended by MHIM are simply part of
  the sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from histomil.models._common import check_dropout, projection
from histomil.models.base import MILModel, MILOutput
from histomil.nn.nystrom import PPEG, NystromLayer, square_side


class TransMIL(MILModel):
    """TransMIL aggregator; ``hidden`` must be divisible by ``heads``."""

    permutation_invariant = False

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 512,
        heads: int = 8,
        landmarks: int = 256,
        dropout: float = 0.0,
        attention_threshold: float = 0.0,
        threshold_at_eval: bool = True,
    ) -> None:
        if attention_threshold > 0:
            raise ValueError(
                "transmil pools through its class token, not a softmax over instances; "
                "attention_threshold is not defined for it (use 0)"
            )
        super().__init__(in_dim, n_classes, attention_threshold, threshold_at_eval)
        self.fc = projection(in_dim, hidden, check_dropout(dropout))
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden))
        self.layer1 = NystromLayer(hidden, heads, landmarks)
        self.ppeg = PPEG(hidden)
        self.layer2 = NystromLayer(hidden, heads, landmarks)
        self.norm = nn.LayerNorm(hidden)
        self.classifier = nn.Linear(hidden, n_classes)

    def _tokens(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(class token + h + the first tokens repeated to fill the square grid (B, 1+s*s, H),
        index of the instance each repeated token copies)."""
        b, n, _ = h.shape
        side = square_side(n)
        idx = torch.arange(side * side - n, device=h.device) % n
        return torch.cat([self.cls_token.expand(b, -1, -1), h, h[:, idx]], dim=1), idx

    def _encode(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Unpadded bags h (B, N, H) -> (class embedding (B, H), scores (B, N), the class
        token's first-layer attention logits (B, heads, 1+s*s))."""
        n = h.shape[1]
        x, _ = self._tokens(h)
        x, first = self.layer1.forward_with_query_logits(x, index=0)
        x = self.ppeg(x, square_side(n))
        x, logits = self.layer2.forward_with_query_logits(x, index=0)  # logits (B, heads, 1+s*s)
        return self.norm(x[:, 0]), logits[:, :, 1 : n + 1].mean(dim=1), first

    def class_aware_logits(self, h: Tensor, out: MILOutput | None = None) -> Tensor:
        """Per-instance class logits (B, N, C) for MHIM's class-aware instance probability.

        Eq. 6 (``S = C(A . Z)``) in the form of the MHIM authors' TransMIL code: instance i's
        share of the class token's *first-layer* attention output,
        ``c_i = to_out(concat_h a_hi v_hi)`` (``a_hi`` the class token's exact softmax attention
        to token i in head h, ``v_hi`` its value), classified by the bag classifier. In the
        first layer every token is still one instance (PPEG and the second layer mix them); on
        a separable toy bag the first-layer shares rank lesions first, the last layer's do not
        (tests/objectives/mhim/test_class_aware.py). The shares of the tokens repeated to fill
        the square grid are added to the instance they copy; the residual path and the
        LayerNorm before the classifier are left out, as in the authors' code. ``out``, this
        model's ``aggregate(h, None)`` (e.g. MHIM's teacher pass), gives the first layer's
        class-token logits (``extras["first_layer_logits"]``): only the values are projected
        again, a third of the first layer's (T, H) x (H, 3H) product.
        """
        x, idx = self._tokens(h)
        n, n_tokens = h.shape[1], x.shape[1]
        attn = self.layer1.attn
        xn = self.layer1.norm(x)
        first = None if out is None else out.extras.get("first_layer_logits")
        same_bags = out is not None and tuple(out.scores.shape[:2]) == tuple(h.shape[:2])
        if first is not None and same_bags and first.shape == (h.shape[0], attn.heads, n_tokens):
            w_v = attn.to_qkv.weight[2 * attn.heads * attn.dim_head :]  # to_qkv has no bias
            v = attn._split(F.linear(xn, w_v))
        else:
            q, k, v = (attn._split(t) for t in attn.to_qkv(xn).chunk(3, dim=-1))
            first = (q[:, :, 0:1] * attn.scale) @ k.transpose(-1, -2)
        a = torch.softmax(first.reshape(h.shape[0], attn.heads, n_tokens), dim=-1)  # (B, h, T)
        share = (a[..., None] * v).transpose(1, 2).flatten(2)  # (B, T, H)
        inst = share[:, 1 : n + 1].index_add(1, idx, share[:, n + 1 :])  # (B, N, H)
        return self.classifier(attn.to_out(inst))

    def aggregate(
        self,
        h: Tensor,
        mask: Tensor | None,
        coords: Tensor | None = None,
        label: Tensor | None = None,
    ) -> MILOutput:
        """(B, N, H) -> MILOutput (coords and label are not used)."""
        extras = {}
        if mask is None or bool(mask.all()):
            z, s, extras["first_layer_logits"] = self._encode(h)
        else:
            s = h.new_zeros(h.shape[:2])
            zs = []
            for i in range(h.shape[0]):
                keep = mask[i].nonzero().squeeze(-1)
                if keep.numel() == 0:  # an all-padding bag: zero embedding, zero scores
                    zs.append(h.new_zeros(1, h.shape[-1]))
                    continue
                zi, si, _ = self._encode(h[i : i + 1, keep])
                zs.append(zi)
                s = s.index_put((torch.full_like(keep, i), keep), si[0])
            z = torch.cat(zs)
        scores = s.unsqueeze(-1)  # (B, N, 1)
        weights = self.pool_weights(scores, mask)
        return MILOutput(
            logits=self.classifier(z), embedding=z, scores=scores, weights=weights, extras=extras
        )
