"""MHIM-MIL v1/v2: masked hard-instance mining with a momentum teacher (see ``docs/mhim.md``)."""

from __future__ import annotations

from histomil.objectives.mhim.masking import MaskResult, cosine_decay, mask_instances
from histomil.objectives.mhim.recycle import GlobalRecycle
from histomil.objectives.mhim.strategy import MHIM, MHIMv1
from histomil.objectives.mhim.teacher import consistency_loss, ema_update

__all__ = [
    "MHIM",
    "GlobalRecycle",
    "MHIMv1",
    "MaskResult",
    "consistency_loss",
    "cosine_decay",
    "ema_update",
    "mask_instances",
]
