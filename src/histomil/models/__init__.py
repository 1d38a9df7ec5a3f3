"""MIL aggregators behind one output contract (see :mod:`histomil.models.base`).

``create_model(name, in_dim, n_classes, **params)`` builds a model from the explicit registry
below; ``names()`` lists the valid names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from histomil.models.abmil import ABMIL
from histomil.models.base import MILModel, MILOutput, masked_softmax, threshold_attention
from histomil.models.clam import CLAMMB, CLAMSB
from histomil.models.dsmil import DSMIL
from histomil.models.dtfd import DTFD
from histomil.models.hipt import HIPT
from histomil.models.pooling import MaxPooling, MeanPooling
from histomil.models.transmil import TransMIL

_REGISTRY: dict[str, Callable[..., MILModel]] = {
    "abmil": ABMIL,
    "clam_mb": CLAMMB,
    "clam_sb": CLAMSB,
    "dsmil": DSMIL,
    "dtfd": DTFD,
    "hipt": HIPT,
    "max": MaxPooling,
    "mean": MeanPooling,
    "transmil": TransMIL,
}


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_class(name: str) -> Callable[..., MILModel]:
    """The constructor registered under ``name`` (ValueError listing valid names if unknown)."""
    key = name.lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(names())}")
    return _REGISTRY[key]


def create_model(name: str, in_dim: int, n_classes: int, **params: Any) -> MILModel:
    """Build model ``name`` for ``in_dim``-d features and ``n_classes`` logits.

    Unknown ``params`` raise a ValueError naming them and the accepted ones.
    """
    cls = check_model_params(name, params)
    return cls(in_dim=in_dim, n_classes=n_classes, **params)


def check_model_params(name: str, params: Mapping[str, Any]) -> Callable[..., MILModel]:
    """The constructor of ``name``; a ValueError naming unknown ``params`` and the accepted ones.

    Cheap (no model is built), so a typo is reported once before training starts.
    """
    cls = model_class(name)
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("in_dim", "n_classes")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) for model {name!r}: {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted)}"
        )
    return cls


__all__ = [
    "MILModel",
    "MILOutput",
    "check_model_params",
    "create_model",
    "masked_softmax",
    "model_class",
    "names",
    "threshold_attention",
]
