"""Patch encoder registry: a name -> a model that maps patches to feature vectors.

- ``resnet50_trunc``: torchvision ResNet-50 up to ``layer3`` (the third residual stage) +
  adaptive average pooling, 1024-d, ImageNet normalisation (the encoder of both papers, and
  CLAM's default).
- ``resnet50``: the full ResNet-50 pooled output, 2048-d.
- pathology foundation models by name (``uni``, ``uni2_h``, ``conch_v15``, ``virchow``,
  ``virchow2``, ``gigapath``, ``h_optimus_0``, ``h_optimus_1``, ``phikon_v2``, ``lunit_vits8``):
  exact architectures and preprocessing in :mod:`histomil.features.foundation`.
- ``timm:<name>``: any timm model with ``num_classes=0`` (pooled features) and the input size
  and normalisation of its timm data config.

Weights come from ``weights=PATH``, ``$HISTOMIL_WEIGHTS_<NAME>``, a name -> path mapping file
(``$HISTOMIL_WEIGHTS_FILE``) or the local torch/Hugging Face caches; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable

from histomil.features.encoder_types import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM,
    Encoder,
    EncoderError,
    WeightsSpec,
    seed_random_weights,
    warn_random_weights,
)
from histomil.features.weights import (
    HOW_TO_PROVIDE,
    TORCH_HUB_RESNET50,
    WeightsError,
    configured_path,
    hf_cache_file,
    load_into,
    read_state_dict,
    torch_hub_file,
    weights_identity,
)


def register_encoder(name: str, builder: Callable[[WeightsSpec], Encoder]) -> None:
    """Add an encoder builder (``WeightsSpec -> Encoder``) under ``name`` (for extensions)."""
    if name.startswith("timm:"):
        raise EncoderError("names starting with 'timm:' are reserved for timm models")
    _REGISTRY[name] = builder


def list_encoders() -> list[str]:
    """Registered names, the foundation models and the ``timm:<name>`` family."""
    from histomil.features.foundation import SPECS

    return sorted(_REGISTRY) + sorted(SPECS) + ["timm:<name>"]


def canonical_name(name: str) -> str:
    """``name`` with TRIDENT-style aliases (``uni_v1``, ``hoptimus0`` ...) mapped to ours."""
    from histomil.features.foundation import lookup

    spec = lookup(name)
    return spec.name if spec is not None else name


def create_encoder(name: str, weights: WeightsSpec | None = None) -> Encoder:
    """Build encoder ``name`` in eval mode with weights from ``weights`` (see :class:`WeightsSpec`).

    Raises :class:`EncoderError` for unknown names and :class:`WeightsError` when no weights are
    available and random weights were not asked for.
    """
    weights = weights or WeightsSpec()
    if weights.random and weights.path is not None:
        raise EncoderError("give either --weights or --random-weights, not both")
    from histomil.features.foundation import NOT_AVAILABLE, lookup

    if name.startswith("timm:"):
        enc = _timm_encoder(name[len("timm:") :], weights)
    elif name in _REGISTRY:
        enc = _REGISTRY[name](weights)
    elif (spec := lookup(name)) is not None:
        from histomil.features.encoders_foundation import foundation_encoder

        enc = foundation_encoder(spec, weights)
    elif name in NOT_AVAILABLE:
        raise EncoderError(f"encoder {name!r} is not offered: {NOT_AVAILABLE[name]}")
    else:
        raise EncoderError(f"unknown encoder {name!r}; valid: {', '.join(list_encoders())}")
    enc.model.eval()
    for p in enc.model.parameters():
        p.requires_grad_(False)
    return enc


def _resnet50_base(weights: WeightsSpec, ignore: tuple[str, ...], name: str):
    """A torchvision ResNet-50 with weights loaded strictly for every layer not in ``ignore``."""
    from torchvision.models import resnet50

    seed_random_weights(weights)
    # Random weights: zero-init residual branches (torchvision's option) so the eval-mode
    # BatchNorms (running stats 0/1) do not pile activations up over 16 blocks; without it the
    # features have mean ~8 and sd ~8 (about 20x ImageNet features) and saturate MIL models.
    model = resnet50(weights=None, zero_init_residual=weights.random)
    path = weights.path
    if weights.random:
        warn_random_weights(name)
        return model, RANDOM
    if path is None and (found := configured_path([name])) is not None:
        path = found[0]
    if path is None:
        path = torch_hub_file(TORCH_HUB_RESNET50)
        if path is None:
            raise WeightsError(
                f"encoder {name}: no ImageNet ResNet-50 weights found locally (looked for "
                f"{', '.join(TORCH_HUB_RESNET50)} in the torch hub cache); {HOW_TO_PROVIDE}"
            )
    state = read_state_dict(path)
    # Checked against the full model so a typo in a dropped layer still counts as unexpected.
    full_keys = set(model.state_dict())
    kept = {k: v for k, v in state.items() if not k.startswith(ignore) or k not in full_keys}
    load_into(_drop(model, ignore), kept, path)
    return model, weights_identity(path)


def _drop(model, prefixes: tuple[str, ...]):
    """Replace top-level children named in ``prefixes`` (e.g. ``layer4.``) by Identity."""
    import torch.nn as nn

    for prefix in prefixes:
        setattr(model, prefix.rstrip("."), nn.Identity())
    return model


def _resnet50_trunc(weights: WeightsSpec) -> Encoder:
    import torch.nn as nn

    model, ident = _resnet50_base(weights, ("layer4.", "fc."), "resnet50_trunc")
    trunk = nn.Sequential(
        model.conv1,
        model.bn1,
        model.relu,
        model.maxpool,
        model.layer1,
        model.layer2,
        model.layer3,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
    )
    return Encoder(
        "resnet50_trunc",
        trunk,
        1024,
        IMAGENET_MEAN,
        IMAGENET_STD,
        None,
        ident,
        architecture="torchvision ResNet-50 up to layer3 (CLAM resnet50_trunc)",
        output="adaptive average pool of layer3 (1024 channels)",
    )


def _resnet50(weights: WeightsSpec) -> Encoder:
    model, ident = _resnet50_base(weights, ("fc.",), "resnet50")
    return Encoder(
        "resnet50",
        model,
        2048,
        IMAGENET_MEAN,
        IMAGENET_STD,
        None,
        ident,
        architecture="torchvision ResNet-50 without fc",
        output="global average pool of layer4 (2048 channels)",
    )


# An explicit table (no import-time self-registration); extend with register_encoder.
_REGISTRY: dict[str, Callable[[WeightsSpec], Encoder]] = {
    "resnet50_trunc": _resnet50_trunc,
    "resnet50": _resnet50,
}


def _timm_encoder(model_name: str, weights: WeightsSpec) -> Encoder:
    import timm

    name = f"timm:{model_name}"
    if not model_name:
        raise EncoderError("timm encoder needs a model name, e.g. timm:resnet18")
    seed_random_weights(weights)
    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
    except RuntimeError as exc:  # timm raises RuntimeError("Unknown model ...")
        raise EncoderError(f"{name}: {exc}; see timm.list_models()") from exc
    if weights.random:
        warn_random_weights(name)
        ident = RANDOM
    else:
        path = weights.path
        if path is None and (found := configured_path([name])) is not None:
            path = found[0]
        if path is None:
            cfg = getattr(model, "pretrained_cfg", {}) or {}
            path = hf_cache_file(cfg.get("hf_hub_id"))
            if path is None:
                raise WeightsError(
                    f"encoder {name}: no cached weights for {cfg.get('hf_hub_id') or model_name}"
                    f" in the Hugging Face cache; {HOW_TO_PROVIDE}"
                )
        state = read_state_dict(path)
        load_into(model, state, path, ignore_prefixes=_classifier_prefixes(model))
        ident = weights_identity(path)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    return Encoder(
        name=name,
        model=model,
        feature_dim=int(model.num_features),
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
        input_size=int(data_cfg["input_size"][-1]),
        weights=ident,
        interpolation="bicubic" if data_cfg.get("interpolation") == "bicubic" else "bilinear",
        architecture=f"timm {model_name} (num_classes=0)",
        output=f"timm pooled features (global_pool={getattr(model, 'global_pool', '?')!s})",
    )


def _classifier_prefixes(model) -> tuple[str, ...]:
    """Head keys a full checkpoint carries but a ``num_classes=0`` model does not."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    own = set(model.state_dict())
    return tuple(f"{h}." for h in heads if not any(k.startswith(f"{h}.") for k in own))


def describe(enc: Encoder) -> dict[str, str | int]:
    """The bag-file attributes that identify an encoder and how patches were fed to it."""
    return {
        "encoder": enc.name,
        "encoder_weights": enc.weights,
        "encoder_architecture": enc.architecture,
        "encoder_output": enc.output,
        "feature_dim": enc.feature_dim,
        "encoder_input_size": enc.input_size or 0,
        "encoder_resize": enc.resize or enc.input_size or 0,
        "encoder_interpolation": enc.interpolation,
        "encoder_mean": ",".join(repr(float(v)) for v in enc.mean),
        "encoder_std": ",".join(repr(float(v)) for v in enc.std),
        "encoder_card": enc.card,
    }
