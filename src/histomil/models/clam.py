"""CLAM-SB and CLAM-MB (Lu et al., Nature Biomedical Engineering 2021), "small" configuration.

``project``: Linear(D, 512) + ReLU + Dropout(0.25). Gated attention (dim 256, dropout 0.25);
CLAM-SB has one attention branch and a Linear(512, C) bag classifier, CLAM-MB one branch and
one Linear(512, 1) classifier per class. Each class ``c`` has an instance classifier
Linear(512, 2) trained by the instance-level clustering loss when a ``label`` is given:
the ``k_sample`` highest-attention instances of the branch of the true class are pseudo-labelled
1 and the ``k_sample`` lowest 0 (in-class); with ``subtyping=True`` the top ``k_sample`` of every
other class's branch are pseudo-labelled 0 for that class (out-of-class). The losses are
cross-entropy (``inst_loss="ce"``) or CLAM's smooth top-1 SVM (``inst_loss="svm"``, written
here as a smoothed multi-class hinge), averaged over bags. ``bag_weight`` (0.7) is exposed for
the objective: ``bag_weight * bag_loss + (1 - bag_weight) * aux_loss``.

Contract decisions:

- Binary one-logit (``n_classes == 1``) models have two "classes" internally (negative and
  positive): two instance classifiers, and CLAM-MB has two branches whose bag logit is
  ``f_1(z_1) - f_0(z_0)`` (equal to the log-odds of CLAM's two-way softmax). Class 1 is the
  positive class (``branch_of_class == (0, 1)``).
- ``instance_logits`` (B, N, K), K = max(n_classes, 2): column ``c`` is instance classifier
  ``c``'s log-odds that the instance is evidence *for* class ``c`` (logit of pseudo-label 1
  minus logit of pseudo-label 0).
- ``k_sample`` is capped at half the bag size so tiny bags still work (CLAM's code fails there);
  bags with fewer than two real instances contribute zero instance loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from histomil.models._common import check_dropout, projection
from histomil.models.base import MILModel, MILOutput
from histomil.nn.attention import AttentionScorer, weighted_sum


def smooth_top1_svm(logits: Tensor, target: Tensor, tau: float = 1.0, alpha: float = 1.0) -> Tensor:
    """Smoothed top-1 multi-class hinge (Berrada et al. 2018): logits (M, 2), target (M,)."""
    margin = alpha * (1 - F.one_hot(target, logits.shape[-1]).to(logits.dtype))
    shifted = (logits + margin) / tau
    true = logits.gather(1, target[:, None]).squeeze(1) / tau
    return (tau * (torch.logsumexp(shifted, dim=1) - true)).mean()


class _CLAMBase(MILModel):
    multi_branch: bool = False

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 512,
        attn_dim: int = 256,
        dropout: float = 0.25,
        k_sample: int = 8,
        bag_weight: float = 0.7,
        subtyping: bool = False,
        inst_loss: str = "ce",
        attention_threshold: float = 0.0,
        threshold_at_eval: bool = True,
    ) -> None:
        super().__init__(in_dim, n_classes, attention_threshold, threshold_at_eval)
        if inst_loss not in ("ce", "svm"):
            raise ValueError(f"inst_loss must be 'ce' or 'svm', got {inst_loss!r}")
        if not 0.0 <= bag_weight <= 1.0 or k_sample < 1:
            raise ValueError("need 0 <= bag_weight <= 1 and k_sample >= 1")
        dropout = check_dropout(dropout)
        self.k_sample, self.bag_weight = int(k_sample), float(bag_weight)
        self.subtyping, self.inst_loss = bool(subtyping), inst_loss
        self.n_inst = max(n_classes, 2)
        branches = self.n_inst if self.multi_branch else 1
        self.fc = projection(in_dim, hidden, dropout)
        self.attention = AttentionScorer(hidden, attn_dim, branches, gated=True, dropout=dropout)
        if self.multi_branch:
            self.classifiers = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(self.n_inst))
        else:
            self.classifier = nn.Linear(hidden, n_classes)
        self.instance_classifiers = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(self.n_inst))

    def _bag_logits(self, z: Tensor) -> Tensor:
        """Pooled features z (B, R, H) -> bag logits (B, C)."""
        if not self.multi_branch:
            return self.classifier(z[:, 0])
        per = torch.cat([clf(z[:, c]) for c, clf in enumerate(self.classifiers)], dim=1)
        return per[:, 1:] - per[:, :1] if self.n_classes == 1 else per  # (B, C)

    def _inst_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.inst_loss == "svm":
            return smooth_top1_svm(logits, target)
        return F.cross_entropy(logits, target)

    def _clustering_loss(self, h: Tensor, scores: Tensor, mask: Tensor | None, label: Tensor):
        """Instance-level clustering loss averaged over bags; h (B, N, H), scores (B, N, R).

        The 2k selected instances are gathered from ``h`` in one index per class (no copy of the
        bag's real instances first): the backward pass then scatters 2k rows instead of
        materialising a (N, H) gradient per selection."""
        losses = []
        for i in range(h.shape[0]):
            rows = None if mask is None else mask[i].nonzero()[:, 0]  # real instances
            si = scores[i] if rows is None else scores[i, rows]  # (n, R)
            k = min(self.k_sample, si.shape[0] // 2)
            y = int(label[i].clamp(0, self.n_inst - 1)) if self.n_classes > 1 else int(label[i] > 0)
            total = h.new_zeros(())
            if k == 0:
                real = h[i] if rows is None else h[i, rows]
                losses.append(total + 0.0 * real.sum())
                continue
            for c, clf in enumerate(self.instance_classifiers):
                col = si[:, c if self.multi_branch else 0]
                if c == y:
                    pick = torch.cat([col.topk(k).indices, (-col).topk(k).indices])
                    target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
                elif self.subtyping:
                    pick = col.topk(k).indices
                    target = torch.zeros(k, dtype=torch.long, device=h.device)
                else:
                    continue
                feats = h[i, pick if rows is None else rows[pick]]  # (k or 2k, H)
                total = total + self._inst_loss(clf(feats), target)
            losses.append(total)
        return torch.stack(losses).mean()

    def aggregate(
        self,
        h: Tensor,
        mask: Tensor | None,
        coords: Tensor | None = None,
        label: Tensor | None = None,
    ) -> MILOutput:
        """(B, N, H) -> MILOutput; with ``label`` (B,) also the clustering ``aux_loss``."""
        scores = self.attention(h)  # (B, N, R)
        weights = self.pool_weights(scores, mask)  # (B, N, R)
        z = weighted_sum(h, weights)  # (B, R, H)
        inst = torch.stack([clf(h) for clf in self.instance_classifiers], dim=2)  # (B, N, K, 2)
        aux = None if label is None else self._clustering_loss(h, scores.detach(), mask, label)
        branch = tuple(range(self.n_inst)) if self.multi_branch else (0,)
        return MILOutput(
            logits=self._bag_logits(z),
            embedding=z.flatten(1),  # (B, R * H)
            scores=scores,
            weights=weights,
            instance_logits=inst[..., 1] - inst[..., 0],  # (B, N, K)
            aux_loss=aux,
            branch_of_class=branch,
        )


class CLAMSB(_CLAMBase):
    """CLAM single-branch: one attention branch, a C-way bag classifier."""

    multi_branch = False


class CLAMMB(_CLAMBase):
    """CLAM multi-branch: one attention branch and one bag classifier per class."""

    multi_branch = True
