"""Methods of the rank-induction paper's comparison (a method = a model + an objective).

The defaults follow the paper: every method uses its model's defaults; rank induction uses
AB-MIL with attention thresholding T = 1 (Sec. "Experiment Details"). An experiment YAML may
add or redefine methods under ``experiment.methods`` (``name: {model: {...}, objective: {...}}``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histomil.experiments.settings import ExperimentSection

DEFAULT_METHODS: dict[str, dict[str, Any]] = {
    "abmil": {"model": {"name": "abmil"}, "objective": {"name": "bag"}},
    "attention_induction": {
        "model": {"name": "abmil"},
        "objective": {"name": "attention_induction"},
    },
    "clam_sb": {"model": {"name": "clam_sb"}, "objective": {"name": "bag"}},
    "clam_mb": {"model": {"name": "clam_mb"}, "objective": {"name": "bag"}},
    "dsmil": {"model": {"name": "dsmil"}, "objective": {"name": "bag"}},
    "hipt": {"model": {"name": "hipt"}, "objective": {"name": "bag"}},
    "rank_induction": {
        "model": {"name": "abmil", "params": {"attention_threshold": 1.0}},
        "objective": {"name": "rank_induction"},
    },
}

#: display names used in tables and figures
DISPLAY = {
    "abmil": "AB-MIL",
    "attention_induction": "Attention induction",
    "clam_sb": "CLAM-SB",
    "clam_mb": "CLAM-MB",
    "dsmil": "DS-MIL",
    "hipt": "HIPT",
    "rank_induction": "Rank induction",
}

REFERENCE = "rank_induction"


@dataclass(frozen=True)
class Method:
    """A named model + objective pair (the ``model``/``objective`` config sections)."""

    name: str
    model: dict[str, Any]
    objective: dict[str, Any]

    @property
    def overrides(self) -> dict[str, Any]:
        return {"model": copy.deepcopy(self.model), "objective": copy.deepcopy(self.objective)}

    @property
    def display(self) -> str:
        return DISPLAY.get(self.name, self.name)


def available_methods(extra: dict[str, Any] | None = None) -> dict[str, Method]:
    """Built-in methods updated with ``extra`` (the YAML's ``experiment.methods``)."""
    table = copy.deepcopy(DEFAULT_METHODS)
    extra = extra or {}
    if not isinstance(extra, dict):
        raise ValueError("experiment.methods must map a method name to {model, objective}")
    for name, spec in extra.items():
        if not isinstance(spec, dict) or set(spec) - {"model", "objective"}:
            raise ValueError(f"experiment.methods.{name}: expected keys model and objective")
        table[name] = {
            "model": spec.get("model", {"name": "abmil"}),
            "objective": spec.get("objective", {"name": "bag"}),
        }
    return {
        n: Method(n, dict(s["model"]), dict(s.get("objective", {"name": "bag"})))
        for n, s in table.items()
    }


def select_methods(
    section: ExperimentSection, requested: list[str] | None, default: list[str]
) -> list[Method]:
    """Methods chosen on the CLI (``--methods``), else ``experiment.use_methods``, else
    ``default``; unknown names raise a ValueError listing the valid ones."""
    table = available_methods(section.methods)
    names = requested or section.use_methods or default
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid: {', '.join(sorted(table))}")
    return [table[n] for n in names]
