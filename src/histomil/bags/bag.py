"""The in-memory bag handed to objectives and the trainer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

UNKNOWN = -1  # patch label of patches whose lesion status is unknown (unannotated positive slide)


@dataclass
class Bag:
    """One slide (or, for survival, one patient) as a bag of instances.

    ``patch_labels``: (N,) int8, 1 lesion, 0 non-lesion, -1 unknown; ``None`` when absent.
    ``attn_target``: (N,) float, the attention-induction target (lesion-and-tissue area share,
    summing to 1 over the bag) for annotated positive slides; ``None`` otherwise.
    """

    slide_id: str
    features: Tensor  # (N, D) float32
    label: int | float  # class index; unused for survival
    coords: Tensor | None = None  # (N, 2) level-0 x, y of each patch's top-left corner
    patch_labels: Tensor | None = None  # (N,)
    overlap: Tensor | None = None  # (N,) lesion fraction of each patch
    attn_target: Tensor | None = None  # (N,)
    time: float | None = None  # survival time
    event: int | None = None  # 1 = event observed, 0 = censored
    case_id: str | None = None
    # set for a streamed bag: features still on disk (see histomil.bags.stream.materialize)
    features_path: str | None = None

    @property
    def n_instances(self) -> int:
        return int(self.features.shape[0])

    @property
    def has_lesion_labels(self) -> bool:
        """True when the bag carries at least one known lesion (1) patch label."""
        return self.patch_labels is not None and bool((self.patch_labels == 1).any())
