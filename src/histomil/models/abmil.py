"""AB-MIL: attention-based deep MIL (Ilse, Tomczak & Welling, ICML 2018).

``project``: Linear(D, 512) + ReLU + Dropout. ``aggregate``: (gated) attention network with
attention dim 128 and one branch, softmax pooling (with the shared attention thresholding) and a
linear bag classifier. Deviation: the paper's CNN feature extractor is replaced by pre-extracted
patch features, as in CLAM, TransMIL, DTFD and both seed papers; dropout (0.25 by default) after
the projection follows CLAM/MHIM's AB-MIL configuration.
"""

from __future__ import annotations

from torch import Tensor, nn

from histomil.models._common import check_dropout, projection
from histomil.models.base import MILModel, MILOutput
from histomil.nn.attention import AttentionScorer, weighted_sum


class ABMIL(MILModel):
    """Attention-based MIL with plain (``gated=False``) or gated attention."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 512,
        attn_dim: int = 128,
        gated: bool = True,
        dropout: float = 0.25,
        attention_threshold: float = 0.0,
        threshold_at_eval: bool = True,
    ) -> None:
        super().__init__(in_dim, n_classes, attention_threshold, threshold_at_eval)
        self.fc = projection(in_dim, hidden, check_dropout(dropout))
        self.attention = AttentionScorer(hidden, attn_dim, branches=1, gated=gated)
        self.classifier = nn.Linear(hidden, n_classes)

    def aggregate(
        self,
        h: Tensor,
        mask: Tensor | None,
        coords: Tensor | None = None,
        label: Tensor | None = None,
    ) -> MILOutput:
        """(B, N, H) -> MILOutput; accepts appended tokens (MHIM recycle) like any instance."""
        scores = self.attention(h)  # (B, N, 1)
        weights = self.pool_weights(scores, mask)  # (B, N, 1)
        z = weighted_sum(h, weights)[:, 0]  # (B, H)
        return MILOutput(logits=self.classifier(z), embedding=z, scores=scores, weights=weights)
