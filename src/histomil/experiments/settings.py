"""The ``experiment:`` section of an experiment YAML, validated strictly at the boundary.

Every key is typed and unknown keys are refused with the valid ones listed (``gird:`` used to be
ignored silently, and the default grid ran). One base YAML may serve several experiments (e.g.
``level0_mpp`` for ``granularity`` in a config also used by ``compare``), so a key that only
another experiment reads is accepted with a warning naming who reads it.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from histomil.experiments.registry import SPECS, ExperimentSpec


class ExperimentSection(BaseModel):
    """Every key any experiment reads (docs/experiments.md); ``None``: not set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid: list[float] | None = None  # fractions / paddings / T
    alphas: list[float] | None = None  # localization
    variants: list[str] | None = None  # mhim-ablation
    methods: dict[str, dict[str, Any]] | None = None  # extra/redefined methods
    use_methods: list[str] | None = None
    reference: str | None = None
    baseline: str | None = None  # annotation-fraction
    level0_mpp: float | None = Field(default=None, gt=0)  # granularity
    localization_key: Literal["scores", "attention"] | None = None
    reference_threshold: float | None = None
    reuse: list[str] | str | None = None
    mhim_params: dict[str, Any] | None = None


def _readers(key: str) -> list[str]:
    return [s.name for s in SPECS if key in s.all_keys]


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"experiment.{where}: {err['msg']} (got {err.get('input')!r})"


def validate_section(
    spec: ExperimentSpec, raw: dict[str, Any], source: str = "config"
) -> ExperimentSection:
    """The validated section for experiment ``spec``; a one-line ValueError naming a bad key and
    the valid ones, a warning for keys set here that only other experiments read."""
    known = ExperimentSection.model_fields
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise ValueError(
            f"{source}: unknown key experiment.{unknown[0]}; valid for {spec.name}: "
            f"{', '.join(spec.all_keys)} (any experiment: {', '.join(known)})"
        )
    try:
        section = ExperimentSection.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{source}: {_one_line(exc)}") from None
    for key, value in raw.items():
        if value is not None and key not in spec.all_keys:
            warnings.warn(
                f"experiment.{key} is read by {', '.join(_readers(key))}, not by {spec.name}: "
                "ignored",
                stacklevel=2,
            )
    return section
