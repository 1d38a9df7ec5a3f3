"""The types every encoder builder shares: :class:`Encoder`, :class:`WeightsSpec`, the error,
and the random-weights helpers. A module of its own so that the registry
(:mod:`histomil.features.encoders`) and the foundation-model builders
(:mod:`histomil.features.encoders_foundation`) both import it without importing each other.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM = "random"


class EncoderError(ValueError):
    """An unknown encoder name or an unusable request."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where weights come from: a file, the caches (default) or, only when asked, random."""

    path: str | os.PathLike | None = None
    random: bool = False
    seed: int = 0


@dataclass
class Encoder:
    """A ready-to-run encoder: ``model(x)`` maps (B, 3, S, S) normalised float to (B, D).

    ``input_size`` None means the native patch size is used; otherwise patches are resized to
    ``resize`` (default ``input_size``) and centre-cropped to ``input_size``. ``weights`` is the
    identity recorded in bag files (path + sha256, or ``"random"``); ``architecture`` and
    ``output`` describe the model and which activations form the feature vector.
    """

    name: str
    model: object  # torch.nn.Module in eval mode
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int | None
    weights: str
    interpolation: str = "bilinear"
    architecture: str = ""
    output: str = ""
    resize: int | None = None
    card: str = ""


def seed_random_weights(weights: WeightsSpec) -> None:
    """Seed torch so random weights (``--random-weights``) are the same in every process."""
    import torch

    torch.manual_seed(weights.seed)


def warn_random_weights(name: str) -> None:
    warnings.warn(
        f"encoder {name}: using RANDOM weights as asked (--random-weights); features are only "
        "good for tests and demos, and bag files record encoder_weights='random'",
        stacklevel=3,
    )
