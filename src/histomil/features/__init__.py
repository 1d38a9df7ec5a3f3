"""histomil.features: the patch encoder registry and batched extraction into bag files."""

from histomil.features.encoders import (
    Encoder,
    EncoderError,
    WeightsSpec,
    create_encoder,
    list_encoders,
    register_encoder,
)
from histomil.features.extract import ExtractConfig, extract_dir, extract_slide
from histomil.features.weights import WeightsError, read_state_dict, weights_identity

__all__ = [
    "Encoder",
    "EncoderError",
    "ExtractConfig",
    "WeightsError",
    "WeightsSpec",
    "create_encoder",
    "extract_dir",
    "extract_slide",
    "list_encoders",
    "read_state_dict",
    "register_encoder",
    "weights_identity",
]
