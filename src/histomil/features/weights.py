"""Loading encoder weights from local files only: a user checkpoint or the timm/torch caches.

Nothing here downloads. A checkpoint is a state dict in torchvision's or timm's key layout,
optionally wrapped in ``state_dict``/``model``/``module`` and with ``module.`` prefixes
(DataParallel/DDP); loading is strict on the layers the encoder keeps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "teacher", "net")
STRIP_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "_orig_mod.")
# torchvision's published ResNet-50 files (V1 = CLAM's and the rank-induction paper's weights).
TORCH_HUB_RESNET50 = ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth")

HOW_TO_PROVIDE = (
    "provide weights with --weights PATH (a state dict in torchvision or timm key layout), "
    "or place the published file in the torch hub cache ($TORCH_HOME/hub/checkpoints) or the "
    "Hugging Face cache ($HF_HOME/hub) for timm models; pass --random-weights only for tests "
    "and demos (features will be meaningless)"
)


class WeightsError(RuntimeError):
    """Weights that cannot be found or do not fit the encoder; the message says what to do."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(path: str | os.PathLike) -> str:
    """``"<absolute path> sha256:<hex>"``: what the bag file records as ``encoder_weights``."""
    path = Path(path).resolve()
    return f"{path} sha256:{sha256_file(path)}"


def read_state_dict(path: str | os.PathLike) -> dict:
    """Read a checkpoint (``.pth``/``.pt``/``.bin``/``.safetensors``) into a flat state dict."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; {HOW_TO_PROVIDE}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with non-tensor objects, ...
        raise WeightsError(f"weights file {path} cannot be read as a state dict ({exc})") from exc
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: object, source: str | os.PathLike = "checkpoint") -> dict:
    """Unwrap ``{"state_dict": ...}``-style containers and strip ``module.``-style prefixes."""
    import torch

    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise WeightsError(f"{source}: no state dict of tensors found (keys: {_head(obj)})")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _is_tensor_dict(obj: Mapping) -> bool:
    import torch

    values = list(obj.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= len(values) / 2


def _head(obj: object) -> str:
    if isinstance(obj, Mapping):
        return ", ".join(map(str, list(obj)[:8]))
    return type(obj).__name__


def load_into(
    model,
    state: Mapping,
    source: str | os.PathLike,
    ignore_prefixes: Iterable[str] = (),
    assign: bool = False,
) -> None:
    """Strictly load ``state`` into ``model``; keys under ``ignore_prefixes`` (layers the encoder
    drops, such as ``layer4.``/``fc.``) are discarded first. Raises :class:`WeightsError` listing
    missing and unexpected keys. ``assign`` hands the tensors to a model built on the meta
    device (``load_state_dict(assign=True)``)."""
    ignore = tuple(ignore_prefixes)
    state = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:8])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:8])}")
        if mismatched:
            shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]
            parts.append(f"shape mismatch: {', '.join(shapes[:5])}")
        raise WeightsError(
            f"{source} does not fit this encoder ({'; '.join(parts)}); check that the file is "
            "for this architecture"
        )
    model.load_state_dict(state, strict=True, assign=assign)


def torch_hub_file(names: Iterable[str]) -> Path | None:
    """The first of ``names`` present in the torch hub checkpoint cache, or None (no download)."""
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def hf_cache_file(
    hf_hub_id: str | None,
    names: Iterable[str] = (
        "model.safetensors",
        "pytorch_model.bin",
        "open_clip_pytorch_model.bin",
    ),
) -> Path | None:
    """The first of ``names`` in the local Hugging Face cache of repo ``hf_hub_id``, or None
    (no download)."""
    if not hf_hub_id:
        return None
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub"))
    repo = hub / ("models--" + hf_hub_id.replace("/", "--")) / "snapshots"
    if not repo.is_dir():
        return None
    for snapshot in sorted(repo.iterdir(), reverse=True):
        for name in names:
            if (snapshot / name).is_file():
                return snapshot / name
    return None


WEIGHTS_FILE_ENV = "HISTOMIL_WEIGHTS_FILE"
DEFAULT_WEIGHTS_FILE = Path("~/.config/histomil/weights.json")


def env_var_for(name: str) -> str:
    """``HISTOMIL_WEIGHTS_<NAME>``: the per-encoder environment variable (``uni2_h`` ->
    ``HISTOMIL_WEIGHTS_UNI2_H``)."""
    return "HISTOMIL_WEIGHTS_" + "".join(c if c.isalnum() else "_" for c in name).upper()


def configured_path(names: Iterable[str]) -> tuple[Path, str] | None:
    """A checkpoint path configured for any of ``names`` (the encoder name, then its aliases),
    with where it came from: ``HISTOMIL_WEIGHTS_<NAME>``, else the JSON/YAML mapping file named
    by ``$HISTOMIL_WEIGHTS_FILE`` (default ``~/.config/histomil/weights.json``; TRIDENT's
    ``local_ckpts.json`` has the same shape: ``{"uni_v1": "/path/pytorch_model.bin", ...}``).
    Empty values are skipped, as TRIDENT does. None when nothing is configured."""
    names = list(names)
    for name in names:
        value = os.environ.get(env_var_for(name), "").strip()
        if value:
            return Path(value).expanduser(), f"${env_var_for(name)}"
    file = Path(os.environ.get(WEIGHTS_FILE_ENV, "") or DEFAULT_WEIGHTS_FILE).expanduser()
    if not file.is_file():
        if os.environ.get(WEIGHTS_FILE_ENV):
            raise WeightsError(f"${WEIGHTS_FILE_ENV} points at {file}, which does not exist")
        return None
    mapping = _read_mapping(file)
    for name in names:
        value = str(mapping.get(name) or "").strip()
        if value:
            path = Path(value).expanduser()
            if not path.is_absolute():
                path = file.parent / path
            return path, str(file)
    return None


def _read_mapping(file: Path) -> dict:
    text = file.read_text()
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            import json

            data = json.loads(text)
    except Exception as exc:  # json/yaml raise their own error types
        raise WeightsError(f"weights mapping {file} cannot be parsed ({exc})") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"weights mapping {file} must map encoder names to checkpoint paths")
    return data
