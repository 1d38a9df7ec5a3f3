"""Losses and training strategies behind the ``objective(model, bag) -> LossOutput`` contract.

``create_objective(name, **params)`` builds one from the registry in
:mod:`histomil.objectives.registry`; ``objective_names()`` lists them.
"""

from __future__ import annotations

from histomil.objectives.base import LossOutput, Objective, TrainContext
from histomil.objectives.rank import rank_loss
from histomil.objectives.registry import create_objective, objective_class, objective_names
from histomil.objectives.survival import risk_score, survival_curve, survival_nll

__all__ = [
    "LossOutput",
    "Objective",
    "TrainContext",
    "create_objective",
    "objective_class",
    "objective_names",
    "rank_loss",
    "risk_score",
    "survival_curve",
    "survival_nll",
]
