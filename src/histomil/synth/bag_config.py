"""Settings and presets of the synthetic CAMELYON-like bag generator (see docs/synthetic.md).

All settings live in one frozen :class:`BagSynthConfig`; a preset is a named config and any field
can be overridden by keyword (``generate_bags(out, "camelyon16", seed=0, signal=2.0)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# CAMELYON16 as split in the rank-induction paper (Table 1): (split, n_positive, n_negative).
CAMELYON16_SPLITS: tuple[tuple[str, int, int], ...] = (
    ("train", 89, 127),
    ("val", 22, 32),
    ("test", 49, 80),
)


@dataclass(frozen=True)
class BagSynthConfig:
    """Every knob of the generator. Units: patches are level-0 ``patch_size_level0`` squares.

    Features: ``x = tissue_type + slide_shift + noise`` with noise sd 1 per dimension; lesion
    patches add ``overlap * signal * lesion_direction`` (so ``signal`` is in noise-sd units along
    a unit direction); salient distractors (both classes) add ``distractor_strength`` along
    directions with cosine ``distractor_lesion_cos`` to the lesion direction.
    """

    task: str = "classification"  # classification | survival
    splits: tuple[tuple[str, int, int], ...] = CAMELYON16_SPLITS
    # bag size: log-normal number of patches per slide
    patches_median: int = 8000
    patches_sigma: float = 0.45
    patches_min: int = 1000
    patches_max: int = 30000
    feature_dim: int = 1024
    dtype: str = "float16"  # storage dtype of features: float16 | float32
    # geometry (CAMELYON16 at 40x; 224 px patches at 20x)
    patch_size: int = 224
    patch_size_level0: int = 448
    level0_mpp: float = 0.243
    # lesions (positive slides): share of the slide's patches, log-normal, clipped
    lesion_share_median: float = 0.015
    lesion_share_sigma: float = 1.4
    lesion_share_max: float = 0.4
    lesions_extra_mean: float = 1.0  # number of lesions = 1 + Poisson(lesions_extra_mean)
    lesion_irregularity: float = 0.35  # amplitude of boundary harmonics (0 = discs)
    # feature space
    signal: float = 5.0  # lesion shift along its unit direction, noise-sd units
    signal_jitter: float = 0.35  # per-patch relative spread of the lesion shift
    lesion_heterogeneity: float = (
        0.6  # per-slide deviation of the lesion direction from the shared one
    )
    n_tissue_types: int = 8
    tissue_type_scale: float = 0.5  # per-dimension sd of tissue-type prototypes
    regions_per_slide: tuple[int, int] = (3, 9)
    slide_shift_scale: float = 0.15  # per-dimension sd of the per-slide stain/batch shift
    # salient distractors (present in both classes, never class evidence)
    distractor_share_median: float = 0.02
    distractor_share_sigma: float = 0.8
    distractor_share_max: float = 0.15
    distractor_strength: float = 4.0
    distractor_lesion_cos: float = 0.5
    n_distractor_types: int = 3
    # annotations (what the "pathologist" drew) and patch labels
    annotation_jitter_px: float = 0.0  # sd of the smooth boundary jitter, level-0 px
    annotation_miss_prob: float = 0.0  # probability that a lesion is not annotated at all
    annotated_fraction: float = 1.0  # share of positive slides with annotations
    label_threshold: float = 0.05  # patch label 1 when annotated overlap > threshold
    write_annotations: bool = True  # GeoJSON polygons in OUT/annotations/
    # survival preset (task == "survival")
    n_cases: int = 200
    slides_per_case: tuple[int, int] = (1, 3)
    case_split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    survival_lesion_share_median: float = 0.08
    survival_lesion_share_sigma: float = 0.9
    grade_strength: float = 1.5  # shift along the "aggressiveness" direction per unit grade
    hazard_share: float = 0.8  # log-hazard per sd of log lesion share
    hazard_grade: float = 0.8  # log-hazard per unit grade
    median_time: float = 36.0  # months, at average risk
    censoring: float = 0.4  # target share of censored cases
    max_time: float = 120.0  # administrative end of follow-up
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in synth.json

    def __post_init__(self) -> None:
        problems = []
        if self.task not in ("classification", "survival"):
            problems.append(f"task must be classification or survival, got {self.task!r}")
        if self.dtype not in ("float16", "float32"):
            problems.append(f"dtype must be float16 or float32, got {self.dtype!r}")
        if not 1 <= self.patches_min <= self.patches_median <= self.patches_max:
            problems.append("need 1 <= patches_min <= patches_median <= patches_max")
        if self.feature_dim < 4:
            problems.append(f"feature_dim must be >= 4, got {self.feature_dim}")
        for name in ("annotation_miss_prob", "annotated_fraction", "censoring"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1]")
        if not -1.0 <= self.distractor_lesion_cos <= 1.0:
            problems.append("distractor_lesion_cos must be in [-1, 1]")
        for split, n_pos, n_neg in self.splits:
            if split not in ("train", "val", "test") or n_pos < 0 or n_neg < 0:
                problems.append(f"bad split entry {(split, n_pos, n_neg)}")
        if problems:
            raise ValueError("invalid synthetic-bag settings: " + "; ".join(problems))

    @property
    def target_mpp(self) -> float:
        return self.level0_mpp * self.patch_size_level0 / self.patch_size


_SMALL = dict(
    splits=(("train", 12, 12), ("val", 4, 4), ("test", 6, 6)),
    patches_median=400,
    patches_min=150,
    patches_max=1200,
    feature_dim=32,
    dtype="float32",
    lesion_share_median=0.05,
    lesion_share_sigma=0.8,
    signal=4.0,
)

PRESETS: dict[str, dict[str, Any]] = {
    "camelyon16": {},
    # same cohort, smaller bags and features: for quick experiments on a laptop CPU
    "camelyon16-medium": dict(
        patches_median=2000, patches_min=400, patches_max=8000, feature_dim=256, signal=4.0
    ),
    "camelyon16-small": _SMALL,
    # method comparisons on a CPU: the small bags with 72 training (30+/42-; validation drawn
    # from them) and 42 test slides; signal 4 chosen with scripts/tune_cohorts.py on training and
    # validation data only (AB-MIL below 1.0 and learning within ~6 epochs; docs/synthetic.md)
    "camelyon16-bench": dict(_SMALL, splits=(("train", 30, 42), ("test", 16, 26)), signal=4.0),
    "tiny": dict(
        _SMALL,
        splits=(("train", 3, 3), ("val", 1, 1), ("test", 2, 2)),
        patches_median=120,
        patches_min=60,
        patches_max=300,
        feature_dim=16,
    ),
    "survival": dict(
        task="survival",
        patches_median=2000,
        patches_min=400,
        patches_max=8000,
        feature_dim=256,
    ),
    "survival-small": dict(
        task="survival",
        n_cases=40,
        patches_median=300,
        patches_min=100,
        patches_max=900,
        feature_dim=32,
        dtype="float32",
    ),
}


def make_config(preset: str = "camelyon16", **overrides: Any) -> BagSynthConfig:
    """The preset's config with ``overrides`` applied; unknown names are rejected."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    names = {f.name for f in dataclasses.fields(BagSynthConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"unknown synthetic-bag setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    return BagSynthConfig(**{**PRESETS[preset], **overrides})


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` (CLI ``--set``) into a typed override using the field's default type."""
    if "=" not in text:
        raise ValueError(f"expected key=value, got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    fields = {f.name: f for f in dataclasses.fields(BagSynthConfig)}
    if key not in fields:
        raise ValueError(
            f"unknown synthetic-bag setting {key!r}; valid: {', '.join(sorted(fields))}"
        )
    default = getattr(BagSynthConfig(), key)
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return key, raw.lower() in ("true", "1", "yes")
        if isinstance(default, tuple):
            import json

            value = json.loads(raw)
            return key, tuple(tuple(v) if isinstance(v, list) else v for v in value)
        if isinstance(default, dict):
            import json

            return key, json.loads(raw)
        return key, type(default)(raw)
    except ValueError as exc:
        raise ValueError(f"cannot parse {key}={raw!r} as {type(default).__name__}") from exc
