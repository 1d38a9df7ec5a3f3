"""Easy-instance assessment by the teacher (paper Sec. 3.3.1, Eq. 5-7).

*Class-aware instance probability* (v2, ``scoring="probability"``), ``S = C_T(A . Z)``:

- teachers whose ``class_aware_logits(h)`` is not None (TransMIL, DS-MIL): Eq. 6 in the form the
  architecture supports (see those methods: TransMIL classifies each instance's share of the
  class token's first-layer attention output, as the authors' code; DS-MIL applies its bag
  classifier to each instance's attention-weighted value in every class branch);
- other teachers with an instance classifier (``MILOutput.instance_logits``): the probability
  of the target class from the instance logits, ``sigmoid(l_i)`` or ``softmax(l_i)[c]``;
- the others (AB-MIL, ...): the teacher's *bag* classifier applied to every
  attention-weighted instance embedding, ``s_i = p_c(C_T(a_i * z_i))`` with ``a_i`` the
  teacher's pooling weight of instance i (branch of class c, after softmax) and ``z_i`` its
  embedding. Because ``F = sum_i a_i z_i``, ``C_T(a_i z_i)`` is instance i's share of the bag
  logit (a class activation map).
  ``z_i`` is ``extras["instance_embeddings"]`` when the model provides it, else the projected
  instance features (what AB-MIL pools); the classifier is ``model.classify``
  (:class:`~histomil.models.base.MILModel`).

The target class ``c`` (``score_class``): ``label`` = the bag's label (for a negative slide the
easy instances are the confidently negative ones; our default, the literal "class-aware"),
``positive`` = class 1, ``max`` = the most probable class (what the authors' code computes);
survival bags have no class label, so they use ``max`` over the softmax of the hazard logits.

*Attention* (v1, ``scoring="attention"``): the teacher's raw attention scores of the branch of
class c (monotone in the pooling weights, so the ordering is the same).
"""

from __future__ import annotations

import torch
from torch import Tensor

from histomil.models.base import MILModel, MILOutput

SCORINGS = ("probability", "attention")
SCORE_CLASSES = ("label", "positive", "max")


def class_probability(logits: Tensor, target: int | None) -> Tensor:
    """(..., C) logits -> (...,) probability of class ``target`` (None = the most probable).

    One logit (binary): ``sigmoid`` for class 1, ``1 - sigmoid`` for class 0.
    """
    if logits.shape[-1] == 1:
        p1 = torch.sigmoid(logits[..., 0])
        if target is None:
            return torch.maximum(p1, 1 - p1)
        return p1 if target == 1 else 1 - p1
    probs = torch.softmax(logits, dim=-1)
    if target is None:
        return probs.max(dim=-1).values
    return probs[..., target]


def instance_scores(
    teacher: MILModel,
    out: MILOutput,
    h: Tensor,
    target: int | None,
    scoring: str = "probability",
) -> Tensor:
    """Teacher scores (N,) of one bag: higher = easier. ``out`` = teacher output on the full bag,
    ``h`` (1, N, H) = teacher's projected features, ``target`` = class (None = max)."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    branch_class = 1 if target is None else target
    n = h.shape[1]
    if scoring == "attention":
        s = out.class_scores(branch_class)
        if s is None:
            raise ValueError(f"{type(teacher).__name__} has no attention scores")
        return s[0, :n]
    own = teacher.class_aware_logits(h, out)
    if own is not None:  # the model's own form of Eq. 6 (TransMIL, DS-MIL)
        return class_probability(own[0, :n], target)
    if out.instance_logits is not None:
        return class_probability(out.instance_logits[0, :n], target)
    weights = out.class_weights(branch_class)
    if weights is None:
        raise ValueError(f"{type(teacher).__name__} has no attention weights to score with")
    z = out.extras.get("instance_embeddings", h)[0, :n]  # (N, E)
    logits = teacher.classify(weights[0, :n, None] * z)  # (N, C)
    return class_probability(logits, target)
