"""Name -> objective registry: one explicit dict of ``"module:Class"`` entries.

Entries are imported lazily so that adding one (one line) never imports heavy strategies until
they are asked for.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from histomil.objectives.base import Objective

_REGISTRY: dict[str, str] = {
    "bag": "histomil.objectives.slide:BagObjective",
    "rank_induction": "histomil.objectives.slide:RankInduction",
    "attention_induction": "histomil.objectives.slide:AttentionInduction",
    "mhim_v1": "histomil.objectives.mhim.strategy:MHIMv1",
    "mhim_v2": "histomil.objectives.mhim.strategy:MHIM",
}


def objective_names() -> list[str]:
    """Registered objective names, sorted."""
    return sorted(_REGISTRY)


def objective_class(name: str) -> type[Objective]:
    """The class registered under ``name`` (ValueError listing valid names if unknown)."""
    key = name.lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; valid names: {', '.join(objective_names())}")
    module, attr = _REGISTRY[key].split(":")
    return getattr(importlib.import_module(module), attr)


def create_objective(name: str, **params: Any) -> Objective:
    """Build objective ``name``; unknown ``params`` raise a ValueError naming them."""
    cls = objective_class(name)
    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) for objective {name!r}: {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted)}"
        )
    return cls(**params)
