"""Training: configs, splits, the per-fold trainer, cross-validated runs and their outputs.

``train(config_or_path, out_dir, executor=...) -> RunResult`` is the entry point.
"""

from __future__ import annotations

from histomil.training.config import ConfigError, TrainConfig, config_from_dict, load_config
from histomil.training.run import RunResult, train

__all__ = ["ConfigError", "RunResult", "TrainConfig", "config_from_dict", "load_config", "train"]
