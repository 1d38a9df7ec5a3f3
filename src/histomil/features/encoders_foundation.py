"""Building a named foundation encoder: find its checkpoint locally, convert the published key
layout, load strictly, and explain a wrong or missing file with the model card's address."""

from __future__ import annotations

import os
from pathlib import Path

from histomil.features.encoder_types import (
    RANDOM,
    Encoder,
    EncoderError,
    WeightsSpec,
    seed_random_weights,
    warn_random_weights,
)
from histomil.features.foundation import SPECS, FoundationSpec, build_model, convert_published
from histomil.features.weights import (
    WEIGHTS_FILE_ENV,
    WeightsError,
    configured_path,
    env_var_for,
    hf_cache_file,
    load_into,
    read_state_dict,
    weights_identity,
)


def find_weights(spec: FoundationSpec, weights: WeightsSpec) -> Path:
    """The checkpoint for ``spec``: ``weights.path``, else ``$HISTOMIL_WEIGHTS_<NAME>`` / the
    mapping file, else the local Hugging Face cache of the model card's repo. Never downloads;
    raises :class:`WeightsError` naming the model card when nothing is found."""
    if weights.path is not None:
        path = Path(weights.path)
        if not path.is_file():
            raise WeightsError(f"encoder {spec.name}: --weights {path} does not exist")
        return path
    found = configured_path([spec.name, *spec.aliases])
    if found is not None:
        path, source = found
        if not path.is_file():
            raise WeightsError(f"encoder {spec.name}: {source} names {path}, which does not exist")
        return path
    cached = hf_cache_file(spec.hf_repo, spec.files)
    if cached is not None:
        return cached
    raise WeightsError(
        f"encoder {spec.name}: no checkpoint found locally (nothing is downloaded). Get "
        f"{' or '.join(spec.files)} from {spec.card} (accept the model's terms there), then pass "
        f'--weights PATH, or set ${env_var_for(spec.name)}=PATH, or map "{spec.name}" to the '
        f"path in the JSON file named by ${WEIGHTS_FILE_ENV} (default "
        "~/.config/histomil/weights.json; TRIDENT's local_ckpts.json works too)"
    )


def foundation_encoder(spec: FoundationSpec, weights: WeightsSpec, **overrides: object) -> Encoder:
    """Build ``spec`` with weights; ``overrides`` change constructor arguments (tests only, e.g.
    ``depth=1``; they are recorded in the architecture string)."""
    import torch

    seed_random_weights(weights)
    if weights.random:
        model = build_model(spec, **overrides)
        warn_random_weights(spec.name)
        ident = RANDOM
    else:
        path = find_weights(spec, weights)  # before building: a missing file fails fast
        state = read_state_dict(path)
        # Built on the meta device and given the file's tensors (no random init of ~1B
        # parameters, no second copy in memory); strict loading guarantees every tensor is set.
        with torch.device("meta"):
            model = build_model(spec, init=False, **overrides)
        load_published(spec, model, state, path)
        model.float()
        ident = weights_identity(path)
    arch = spec.architecture
    if overrides:
        arch += " [test overrides: " + ", ".join(f"{k}={v}" for k, v in overrides.items()) + "]"
    return Encoder(
        name=spec.name,
        model=model,
        feature_dim=spec.feature_dim,
        mean=spec.mean,
        std=spec.std,
        input_size=spec.input_size,
        weights=ident,
        interpolation=spec.interpolation,
        architecture=arch,
        output=spec.output,
        resize=spec.resize,
        card=spec.card,
    )


def load_published(spec: FoundationSpec, model, state: dict, source: str | os.PathLike) -> None:
    """Strictly load a checkpoint in ``spec``'s published layout into ``model``; on a mismatch
    the error says which other named encoder the file fits, when one does."""
    converted = convert_published(spec, state, model)
    # A classifier head (timm's `head.`) is not part of the feature model; files saved from a
    # model with num_classes > 0 carry one.
    heads = ("head.",) if not any(k.startswith("head.") for k in model.state_dict()) else ()
    try:
        load_into(model, converted, source, ignore_prefixes=heads, assign=True)
    except WeightsError as exc:
        other = guess_encoder(state, exclude=spec.name)
        hint = f"; it looks like a {other!r} checkpoint" if other else ""
        raise WeightsError(
            f"{exc} (expected the {spec.name} checkpoint from {spec.card}){hint}"
        ) from None


def guess_encoder(state: dict, exclude: str = "") -> str | None:
    """The named encoder whose full-size architecture ``state`` fits exactly (key names and
    shapes), checked on the meta device (no memory), or None."""
    import torch

    for spec in SPECS.values():
        if spec.name == exclude:
            continue
        with torch.device("meta"):
            model = build_model(spec, init=False)
        try:
            converted = convert_published(spec, dict(state), model)
        except Exception:  # a conversion that does not apply to this file
            continue
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {k: tuple(getattr(v, "shape", ())) for k, v in converted.items()}
        if own == got:
            return spec.name
    return None


def check_weights(name: str, weights: WeightsSpec) -> None:
    """Fail before any slide is read when ``name``'s checkpoint cannot be found (named encoders
    and the ResNets; a ``timm:`` model's cache entry is only known once it is built)."""
    from histomil.features.foundation import NOT_AVAILABLE, lookup
    from histomil.features.weights import HOW_TO_PROVIDE, TORCH_HUB_RESNET50, torch_hub_file

    if weights.random:
        return
    if name in NOT_AVAILABLE:
        raise EncoderError(f"encoder {name!r} is not offered: {NOT_AVAILABLE[name]}")
    spec = lookup(name)
    if spec is not None:
        find_weights(spec, weights)
        return
    if weights.path is not None and not Path(weights.path).is_file():
        raise WeightsError(f"encoder {name}: --weights {weights.path} does not exist")
    if name in ("resnet50", "resnet50_trunc") and weights.path is None:
        if configured_path([name]) is None and torch_hub_file(TORCH_HUB_RESNET50) is None:
            raise WeightsError(
                f"encoder {name}: no ImageNet ResNet-50 weights found locally; {HOW_TO_PROVIDE}"
            )
