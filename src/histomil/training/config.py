"""Training configuration: each section declared once, as a frozen pydantic dataclass.

The same classes validate the YAML (unknown keys rejected, values range-checked) and are the
frozen records used inside the package (STYLE.md's "pydantic at the boundary, frozen
dataclasses inside", written once). ``load_config(path)`` reads a YAML file, rejects unknown
keys (the message names them), resolves relative paths against the config file's folder and
returns a :class:`TrainConfig`. ``config_to_dict`` gives the resolved form saved as
``RUN/config.yaml`` (fields in declaration order).
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

_STRICT = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the offending keys."""


@dataclass(frozen=True, config=_STRICT)
class DataConfig:
    manifest: str
    bags: str
    labels_dir: str | None = None
    train_fraction: float = Field(1.0, gt=0, le=1)
    annotated_fraction: float = Field(1.0, ge=0, le=1)
    min_overlap: float | None = Field(None, ge=0, lt=1)
    padding_px: float = Field(0.0, ge=0)
    patch_size_level0: int | None = Field(None, gt=0)
    patient_level: bool | None = None
    # classification labels: manifest value (text) -> class index; None: integer labels or
    # the usual binary names (see histomil.training.labels)
    labels: dict[str, int] | None = None
    n_classes: int | None = Field(None, ge=2)  # declared class count; default: `labels`, else 2

    @field_validator("labels", mode="before")
    @classmethod
    def _label_keys(cls, v):
        # YAML reads `{0: 0, 1: 1}` with int keys; manifest labels are compared as text
        return None if v is None else {str(k).strip(): val for k, val in dict(v).items()}

    @field_validator("labels")
    @classmethod
    def _label_values(cls, v):
        if v is not None:
            values = sorted(set(v.values()))
            if values != list(range(len(values))) or len(values) < 2:
                raise ValueError(
                    f"class indices must be 0..n-1 with n >= 2 (got {sorted(v.values())})"
                )
        return v


@dataclass(frozen=True, config=_STRICT)
class ModelConfig:
    name: str = "abmil"
    params: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, config=_STRICT)
class ObjectiveConfig:
    name: str = "bag"
    params: dict[str, Any] = Field(default_factory=dict)
    # per-fold trained baseline for objectives with ``needs_baseline`` (MHIM's teacher):
    # None or "auto" = trained by the run into RUN/baseline/; a run folder (its
    # folds/<k>/checkpoint.pt) or a checkpoint file = reused (same splits required)
    baseline: str | None = None

    @field_validator("params")
    @classmethod
    def _moved(cls, v):
        if "teacher_init" in v:  # its former place: refused with the new key, not guessed
            raise ValueError(
                "teacher_init moved out of the params: write objective.baseline: "
                "auto | <run folder> | <checkpoint file>"
            )
        return v


@dataclass(frozen=True, config=_STRICT)
class TrainSettings:
    lr: float = Field(2.0e-4, gt=0)
    weight_decay: float = Field(1.0e-5, ge=0)
    max_epochs: int = Field(200, ge=1)
    warmup_epochs: int = Field(20, ge=0)
    patience: int = Field(7, ge=1)
    seed: int = 0
    batch_accumulation: int = Field(1, ge=1)
    balanced_sampling: bool = False
    device: str = "cpu"
    eval_every: int = Field(1, ge=1)
    threshold: str = "youden"
    survival_bins: int = Field(4, ge=2)
    # torch intra-op threads per fold (None: leave torch's default)
    threads: int | None = Field(None, ge=1)
    # Training forward/loss precision. "bfloat16" runs them under torch.autocast (matrix
    # multiplies in bfloat16 with float32 accumulation; weights, optimiser state, gradients of
    # the weights and every evaluation stay float32). Opt-in: on CPUs with AVX512-BF16 or AMX
    # and on GPUs it is several times faster; float32 is the papers' setting.
    precision: Literal["float32", "bfloat16"] = "float32"
    # Learning-rate schedule over optimizer steps: "none" (constant lr) or "cosine" from ``lr``
    # to ``lr_min`` over ``max_epochs`` epochs (MHIM-v2 paper: cosine annealing; the authors'
    # code: CosineAnnealingLR(T_max = num_epoch, eta_min = 0)), after an optional linear
    # warm-up of ``lr_warmup_steps`` optimizer steps.
    scheduler: Literal["none", "cosine"] = "none"
    lr_warmup_steps: int = Field(0, ge=0)
    lr_min: float = Field(0.0, ge=0)
    # First epoch (0-based) that may be selected as the best epoch. 0 (default) tracks the best
    # epoch from the first epoch, as the rank-induction authors' code; a larger value keeps
    # warm-up epochs (a nearly untrained model) out of model selection.
    select_from_epoch: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _selectable(self):
        if self.select_from_epoch >= self.max_epochs:
            raise ValueError(
                f"select_from_epoch ({self.select_from_epoch}) must be < max_epochs "
                f"({self.max_epochs}): no epoch could be selected"
            )
        return self


@dataclass(frozen=True, config=_STRICT)
class SplitConfig:
    scheme: Literal["monte_carlo", "kfold", "files"] = "monte_carlo"
    repeats: int = Field(10, ge=1)
    k: int = Field(5, ge=2)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    val: Literal["fraction", "manifest"] = "fraction"
    test: Literal["manifest", "fold", "none"] | float = "manifest"
    dir: str | None = None  # scheme files: folder of CLAM splits_<k>.csv

    @field_validator("test")
    @classmethod
    def _fraction(cls, v):
        if isinstance(v, float) and not 0 < v < 1:
            raise ValueError("test fraction must be in (0, 1)")
        return v

    @property
    def n_folds(self) -> int:
        if self.scheme == "files":
            from histomil.training.split_files import split_files

            return len(split_files(self.dir or "."))
        return self.repeats if self.scheme == "monte_carlo" else self.k


@dataclass(frozen=True, config=_STRICT)
class OutputConfig:
    attention: bool = True
    attention_splits: tuple[Literal["val", "test"], ...] = ("val", "test")
    save_checkpoints: bool = True


@dataclass(frozen=True, config=_STRICT)
class TrainConfig:
    """Everything one training run needs (paths absolute once loaded by :func:`load_config`)."""

    data: DataConfig
    task: Literal["classification", "survival"] = "classification"
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainSettings = Field(default_factory=TrainSettings)
    split: SplitConfig = Field(default_factory=SplitConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)


_ADAPTER = TypeAdapter(TrainConfig)
_EXTRA = ("extra_forbidden", "unexpected_keyword_argument")


def _unknown_keys_message(exc: ValidationError) -> str:
    extra = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] in _EXTRA]
    other = [
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
        for e in exc.errors()
        if e["type"] not in _EXTRA
    ]
    parts = []
    if extra:
        parts.append(f"unknown key(s): {', '.join(extra)}")
    if other:
        parts.append("; ".join(other))
    return "; ".join(parts)


def _resolve(base: Path | None, value: str | None) -> str | None:
    if value is None:
        return None
    p = Path(os.path.expanduser(value))
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.resolve())


def config_from_dict(raw: dict[str, Any], base_dir: str | os.PathLike | None = None) -> TrainConfig:
    """Validate a raw mapping (unknown keys rejected) and resolve paths against ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping, got {type(raw).__name__}")
    try:
        config = _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid training config: {_unknown_keys_message(exc)}") from exc
    base = Path(base_dir) if base_dir is not None else None
    d = config.data
    data = replace(
        d,
        manifest=_resolve(base, d.manifest),
        bags=_resolve(base, d.bags),
        labels_dir=_resolve(base, d.labels_dir),
    )
    baseline = config.objective.baseline
    if baseline and baseline != "auto" and base is not None and not Path(baseline).is_absolute():
        candidate = base / baseline
        if candidate.exists():
            baseline = str(candidate.resolve())
    return replace(
        config,
        data=data,
        objective=replace(config.objective, baseline=baseline or None),
        split=_split_paths(config.split, base),
    )


def _split_paths(split: SplitConfig, base: Path | None) -> SplitConfig:
    """``split.dir`` (CLAM split files) resolved against the config file's folder."""
    if split.scheme == "files" and not split.dir:
        raise ValueError("split.scheme: files needs split.dir, the folder of splits_<k>.csv")
    if split.dir and base is not None and not Path(split.dir).is_absolute():
        return replace(split, dir=str((base / split.dir).resolve()))
    return split


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML config; relative paths are resolved against the file's folder."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return config_from_dict(raw or {}, base_dir=path.resolve().parent)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain mapping of the resolved config (what ``RUN/config.yaml`` holds)."""
    out = asdict(config)
    out["output"]["attention_splits"] = list(config.output.attention_splits)
    return out


def with_defaults(saved: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """``saved`` (a stored config mapping) with settings added since it was written filled in
    at their defaults, so a run made by an older histomil compares equal when ``config`` leaves
    them at their defaults."""
    import copy

    import yaml

    defaults = yaml.safe_load(dump_config(TrainConfig(data=config.data)))
    filled = copy.deepcopy(saved)
    for section, values in defaults.items():
        if isinstance(values, dict) and isinstance(filled.get(section), dict):
            for key, value in values.items():
                filled[section].setdefault(key, value)
    return filled


def config_differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """``key: old -> new`` for every setting where ``saved`` differs from ``config``
    (:func:`histomil.provenance.differences`; empty when they describe the same run)."""
    import yaml

    from histomil.provenance import differences

    wanted = yaml.safe_load(dump_config(config))
    return differences(with_defaults(saved, config), wanted)


def matches_saved(saved: dict[str, Any], config: TrainConfig) -> bool:
    """Whether a saved ``RUN/config.yaml`` mapping describes the same run as ``config``."""
    return not config_differences(saved, config)


def dump_config(config: TrainConfig) -> str:
    """YAML text of the resolved config."""
    import yaml

    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
