"""DS-MIL (Li, Li & Eliceiri, CVPR 2021): dual-stream MIL with a critical-instance attention.

``project``: Linear(D, 512) + ReLU + Dropout (the embedding MHIM-v2's DS-MIL uses; the original
runs both streams directly on the extracted features). Stream 1: an instance classifier
Linear(512, C') (``instance_logits``, C' = n_classes) and, per class, the critical instance
(highest instance logit among the real instances). Stream 2: queries
``q = tanh(W2 relu(W1 h))`` (dim 128); the raw score of instance i for class c is
``<q_i, q_crit_c> / sqrt(128)`` (``scores``, one branch per class); the masked softmax
(with the shared attention thresholding) pools the values (identity, or Linear + ReLU with
``passing_v``) into one vector per class, and a Conv1d over the C' class vectors (kernel =
hidden size) gives the bag logits.

Training: DS-MIL's loss is ``0.5 * bag_loss + 0.5 * max_instance_loss``. With a ``label``,
``aux_loss`` is the max-instance loss (BCE with logits for one-logit models, CE otherwise)
and ``bag_weight = 0.5``, so the objective's combination reproduces it. The max-instance logits
are also in ``extras["max_instance_logits"]`` (B, C'). For survival heads the aux loss treats
the bin index as a class; set ``max_instance_loss=False`` to switch it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from histomil.models._common import check_dropout, projection
from histomil.models.base import MILModel, MILOutput


class DSMIL(MILModel):
    """Dual-stream MIL; one attention branch per output logit."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 512,
        q_dim: int = 128,
        dropout: float = 0.25,
        passing_v: bool = False,
        max_instance_loss: bool = True,
        attention_threshold: float = 0.0,
        threshold_at_eval: bool = True,
    ) -> None:
        super().__init__(in_dim, n_classes, attention_threshold, threshold_at_eval)
        self.bag_weight = 0.5
        self.max_instance_loss = bool(max_instance_loss)
        self.fc = projection(in_dim, hidden, check_dropout(dropout))
        self.instance_classifier = nn.Linear(hidden, n_classes)
        self.q = nn.Sequential(
            nn.Linear(hidden, q_dim), nn.ReLU(), nn.Linear(q_dim, q_dim), nn.Tanh()
        )
        self.v = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()) if passing_v else nn.Identity()
        self.fcc = nn.Conv1d(n_classes, n_classes, kernel_size=hidden)
        self.q_scale = q_dim**-0.5

    def class_aware_logits(self, h: Tensor, out: MILOutput | None = None) -> Tensor:
        """Per-instance class logits (B, N, C) for MHIM's class-aware instance probability.

        Eq. 6 (``S = C(A . Z)``) with DS-MIL's bag classifier: the bag logits are
        ``fcc(sum_i A_i * v(h_i))`` (``A_i`` the instance's pooling weight in each class branch),
        and ``fcc`` is linear, so ``fcc(A_i * v(h_i))`` is instance i's share of the bag logit
        (the bias counted once per instance, as for AB-MIL's ``C(a_i z_i)``). ``out``: this
        model's ``aggregate(h, None)`` when the caller already has it (its weights are reused).

        ``fcc`` is a Conv1d whose kernel spans the whole hidden size, i.e. a linear map of the
        (C, H) class vectors: share[o] = sum_c A_c * <W[o, c], v(h)> + bias[o]. It is computed
        as one (N, H) x (H, O * C) product instead of a convolution over N copies of the
        (C, H) vectors (tests/models/test_dsmil_class_aware.py keeps that form as reference).
        """
        if out is None:
            out = self.aggregate(h, None)
        weights = out.weights  # (B, N, C)
        b, n, c = weights.shape
        w = self.fcc.weight  # (O, C, H)
        proj = self.v(h) @ w.reshape(-1, w.shape[-1]).t()  # (B, N, O * C)
        per = (proj.reshape(b, n, w.shape[0], c) * weights[:, :, None, :]).sum(-1)  # (B, N, O)
        return per + self.fcc.bias

    def aggregate(
        self,
        h: Tensor,
        mask: Tensor | None,
        coords: Tensor | None = None,
        label: Tensor | None = None,
    ) -> MILOutput:
        """(B, N, H) -> MILOutput; appended tokens (MHIM recycle) act as ordinary instances."""
        inst = self.instance_classifier(h)  # (B, N, C)
        ranked = inst if mask is None else inst.masked_fill(~mask[..., None], float("-inf"))
        max_logits, crit = ranked.max(dim=1)  # (B, C), (B, C)
        max_logits = torch.nan_to_num(max_logits, neginf=0.0)  # all-padding bags
        q = self.q(h)  # (B, N, Q)
        q_crit = q.gather(1, crit[..., None].expand(-1, -1, q.shape[-1]))  # (B, C, Q)
        scores = (q @ q_crit.transpose(1, 2)) * self.q_scale  # (B, N, C)
        weights = self.pool_weights(scores, mask)  # (B, N, C)
        bag = weights.transpose(1, 2) @ self.v(h)  # (B, C, H)
        logits = self.fcc(bag).squeeze(-1)  # (B, C)
        aux = None
        if label is not None and self.max_instance_loss:
            if self.n_classes == 1:
                aux = F.binary_cross_entropy_with_logits(
                    max_logits[:, 0], label.to(max_logits.dtype)
                )
            else:
                aux = F.cross_entropy(max_logits, label.long())
        return MILOutput(
            logits=logits,
            embedding=bag.flatten(1),  # (B, C * H)
            scores=scores,
            weights=weights,
            instance_logits=inst,
            aux_loss=aux,
            branch_of_class=tuple(range(self.n_classes)),
            extras={"max_instance_logits": max_logits},
        )
