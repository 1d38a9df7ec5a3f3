"""Settings of the MHIM strategies, in groups (the ``objective.params`` of a run config).

Defaults: the paper where it gives a number, else the authors' code (noted per field); see
``docs/mhim.md`` for the table and the deviations.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from histomil.objectives.mhim.masking import LARGE_SCALE
from histomil.objectives.mhim.scoring import SCORE_CLASSES, SCORINGS

HIGH_SCORE_MASKING = ("scores", "target", "spare_lesions")


@dataclass(frozen=True)
class MaskingConfig:
    """Easy-instance assessment and masking (paper Sec. 3.3)."""

    scoring: str = "probability"  # class-aware instance probability (v2); "attention" = v1
    score_class: str = "label"  # target class of the probability: label | positive | max
    beta_h: float = 0.01  # high-score mask ratio at epoch 0 (paper: "<< 5 %"; code C16: 0.01)
    random_high: bool = True  # RHSM: top 2*beta_h are candidates, half of them masked
    decay: bool = True  # cosine decay of beta_h to 0 over training (paper; code: off by default)
    # Length of that decay in epochs; None = train.max_epochs (the authors' code: cosine over
    # num_epoch iterations, whatever early stopping does). With early stopping the selected
    # epoch then sees little decay; a number (e.g. the epochs a baseline actually trains) makes
    # beta_h reach 0 there and stay 0.
    decay_epochs: int | None = None
    beta_l: float = 0.8  # large-scale mask ratio of the rest (paper 70-90 %; code keeps 20 %)
    large_scale: str = "random"  # random (RSM, v2) | low (LSM) | none
    high_score_masking: str = "scores"  # scores | target | spare_lesions (annotated lesions)

    def __post_init__(self) -> None:
        _choice("scoring", self.scoring, SCORINGS)
        _choice("score_class", self.score_class, SCORE_CLASSES)
        _choice("large_scale", self.large_scale, LARGE_SCALE)
        _choice("high_score_masking", self.high_score_masking, HIGH_SCORE_MASKING)
        if not 0.0 <= self.beta_h < 0.5:
            raise ValueError(f"beta_h must be in [0, 0.5), got {self.beta_h}")
        if not 0.0 <= self.beta_l < 1.0:
            raise ValueError(f"beta_l must be in [0, 1), got {self.beta_l}")
        if self.decay_epochs is not None and self.decay_epochs < 1:
            raise ValueError(f"decay_epochs must be >= 1 or null, got {self.decay_epochs}")


@dataclass(frozen=True)
class TeacherConfig:
    """Momentum teacher and student initialisation (paper Sec. 3.5, 4.5.4)."""

    momentum: float = 0.9999  # paper Sec. 4.2 (authors' code default: 0.9997)
    schedule: str = "constant"  # constant | cosine (momentum -> 1 over training, code --mm_sche)
    init_student: str = "projection"  # projection (paper) | all | none (authors' v2 code)
    # Small-cohort form of the same EMA: the teacher moves half-way to the student every
    # ``momentum_half_life_epochs`` epochs, i.e. per-step momentum
    # ``m = 0.5 ** (1 / (half_life * steps_per_epoch))`` (replaces ``momentum`` when set).
    # The paper's 0.9999 per step has a half-life of ~6,900 steps: ~25 epochs of CAMELYON16's
    # ~270 training slides, but ~115 epochs of a 60-bag cohort.
    momentum_half_life_epochs: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")
        hl = self.momentum_half_life_epochs
        if hl is not None and not hl > 0:
            raise ValueError(f"momentum_half_life_epochs must be > 0 or null, got {hl}")
        _choice("schedule", self.schedule, ("constant", "cosine"))
        _choice("init_student", self.init_student, ("projection", "all", "none"))


@dataclass(frozen=True)
class RecycleConfig:
    """Global recycle network (paper Sec. 3.4)."""

    enabled: bool = True
    n_queries: int = 1  # K (authors' code --merge_k default 1; the paper gives no number)
    heads: int = 8
    momentum: float = 0.9998  # EMA of the queries (code --merge_mm)
    at_inference: bool = True  # paper Sec. 3.6: Z~ = concat(Z, R(Z)); authors' code: off
    dropout: float = 0.0  # attention weights and output (paper: none; code MCA: 0.1)

    def __post_init__(self) -> None:
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {self.n_queries}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"recycle dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ConsistencyConfig:
    """``L = L_cls + alpha * L_con`` with ``L_con = -softmax(F_t / tau) . log_softmax(F_s)``."""

    alpha: float = 0.1  # authors' CAMELYON scripts (0.5 for TCGA); the paper gives no number
    tau: float = 0.1  # authors' code --temp_t

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.tau <= 0:
            raise ValueError(f"need alpha >= 0 and tau > 0, got {self.alpha}, {self.tau}")


@dataclass(frozen=True)
class RankConfig:
    """Rank induction on the student's raw scores of the kept annotated instances (0 = off)."""

    weight: float = 0.0
    sigma: float = 1.0
    margin: float = 1.0
    max_pos: int | None = 1024
    max_neg: int | None = 1024


T = TypeVar("T")


def group(cls: type[T], values: dict[str, Any] | T | None, defaults: dict[str, Any]) -> T:
    """Build settings group ``cls`` from a dict over ``defaults``; unknown keys raise."""
    if isinstance(values, cls):
        return values
    merged = dict(defaults)
    merged.update(values or {})
    allowed = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} key(s): {', '.join(unknown)}; accepted: "
            f"{', '.join(sorted(allowed))}"
        )
    return cls(**merged)


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")
