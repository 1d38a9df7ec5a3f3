"""Encoders whose published files are not in timm's layout: CONCH v1.5's vision tower and
Hugging Face ``Dinov2Model`` checkpoints (Phikon-v2).

Hand-written because their reference code is not installable from PyPI (CONCH v1.5 lives in
TRIDENT's model zoo, ``transformers`` is not a histomil dependency); each piece maps 1:1 onto timm
modules so the numerics are timm's.
"""

from __future__ import annotations

import math
from typing import Any


def _tower_class():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from timm.models.vision_transformer import VisionTransformer

    class AttentionalPooler(nn.Module):
        """CONCH's pooler: learned queries cross-attend (multi-head) to the trunk tokens.

        Same parameters and arithmetic as TRIDENT's ``AttentionalPooler`` (query, ln_k, ln_q,
        to_q, to_kv, to_out; no biases), written with ``scaled_dot_product_attention``.
        """

        def __init__(self, d_model: int, context_dim: int, n_head: int, n_queries: int) -> None:
            super().__init__()
            self.query = nn.Parameter(torch.randn(n_queries, d_model))
            self.heads = n_head
            self.ln_k = nn.LayerNorm(context_dim)
            self.ln_q = nn.LayerNorm(d_model)
            self.to_q = nn.Linear(d_model, d_model, bias=False)
            self.to_kv = nn.Linear(context_dim, d_model * 2, bias=False)
            self.to_out = nn.Linear(d_model, d_model, bias=False)

        def forward(self, x):  # (B, N, C) -> (B, Q, D)
            b, h = x.shape[0], self.heads
            q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)
            k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)
            q, k, v = (t.unflatten(-1, (h, -1)).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v)
            return self.to_out(out.transpose(1, 2).flatten(2))

    class ConchVisionTower(nn.Module):
        """trunk (ViT-L/16, LayerScale 1.0) -> attn_pool_contrast (1 query) -> ln_contrast."""

        def __init__(self, vit_kwargs: dict[str, Any]) -> None:
            super().__init__()
            kw = {k: v for k, v in vit_kwargs.items() if k not in ("global_pool",)}
            kw["img_size"] = 448  # pos_embed is set for 448-px input at load (conch_pos_embed)
            self.trunk = VisionTransformer(global_pool="", **kw)
            dim = kw.get("embed_dim", 1024)
            self.attn_pool_contrast = AttentionalPooler(768, dim, n_head=8, n_queries=1)
            self.ln_contrast = nn.LayerNorm(768)

        def forward(self, x):
            tokens = self.trunk.forward_features(x)
            return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])

    return ConchVisionTower


def ConchVisionTower(vit_kwargs: dict[str, Any]):  # noqa: N802 - keeps torch imports lazy
    return _tower_class()(vit_kwargs)


def conch_pos_embed(state: dict, model) -> dict:
    """Position embedding of a CONCH v1.5 file for 448-px input, computed as the reference does.

    TRIDENT builds the trunk at 224 px, resamples the file's ``trunk.pos_embed`` to that 14x14
    grid (timm ``resample_abs_pos_embed``, bilinear, no antialias) when loading, and at run time
    interpolates it bicubically with ``scale_factor = (28 + 0.1) / 14`` for a 448-px input. We
    do both steps once at load time, so our trunk (built at 448) sees the same numbers.
    """
    import torch
    import torch.nn.functional as F
    from timm.layers import resample_abs_pos_embed

    key = "trunk.pos_embed"
    if key not in state:
        return state
    pos = state[key]
    if pos.ndim != 3 or pos.shape[1] < 2 or math.isqrt(pos.shape[1] - 1) ** 2 != pos.shape[1] - 1:
        return state  # not a square grid + class token: let the strict load report the shape
    base = 224 // 16
    if pos.shape[1] - 1 != base * base:
        pos = resample_abs_pos_embed(
            pos,
            new_size=(base, base),
            num_prefix_tokens=1,
            interpolation="bilinear",
            antialias=False,
            verbose=False,
        )
    grid = model.trunk.patch_embed.grid_size[0]
    if grid != base:
        cls, patches = pos[:, :1], pos[:, 1:]
        dim = patches.shape[-1]
        patches = patches.reshape(1, base, base, dim).permute(0, 3, 1, 2)
        scale = (grid + 0.1) / base
        patches = F.interpolate(patches.float(), scale_factor=(scale, scale), mode="bicubic")
        patches = patches.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos.dtype)
        pos = torch.cat([cls, patches], dim=1)
    return {**state, key: pos}


def hf_dinov2_to_timm(state: dict) -> dict:
    """Hugging Face ``Dinov2Model`` keys -> timm ``VisionTransformer`` keys (query/key/value
    concatenated into ``qkv``); ``mask_token`` (training only) is dropped. Keys that match no
    rule are kept unchanged so the strict load lists them."""
    import re

    import torch

    state = {k.removeprefix("dinov2."): v for k, v in state.items()}
    out: dict[str, Any] = {}
    simple = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    block = {
        "norm1": "norm1",
        "norm2": "norm2",
        "attention.output.dense": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    qkv: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        if key == "embeddings.mask_token":
            continue
        if key in simple:
            out[simple[key]] = value
            continue
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)", key)
        if m is None:
            out[key] = value
            continue
        i, part, kind = m.groups()
        if part.startswith("attention.attention."):
            qkv.setdefault(f"blocks.{i}.attn.qkv.{kind}", {})[part.rsplit(".", 1)[1]] = value
        elif part in ("layer_scale1", "layer_scale2") and kind == "lambda1":
            out[f"blocks.{i}.ls{part[-1]}.gamma"] = value
        elif part in block:
            out[f"blocks.{i}.{block[part]}.{kind}"] = value
        else:
            out[key] = value
    for key, parts in qkv.items():
        if set(parts) == {"query", "key", "value"}:
            out[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
        else:
            out[key] = next(iter(parts.values()))  # incomplete: strict load reports the shape
    return out


def timm_to_hf_dinov2(state: dict) -> dict:
    """The inverse of :func:`hf_dinov2_to_timm` (tests write files in Phikon-v2's layout)."""
    import torch

    out: dict[str, Any] = {"embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1])}
    inverse = {
        "cls_token": "embeddings.cls_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    for key, value in state.items():
        if key in inverse:
            out[inverse[key]] = value
            continue
        _, i, rest = key.split(".", 2)
        pre = f"encoder.layer.{i}"
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"{pre}.attention.attention.{name}.{kind}"] = part
        elif rest.startswith("attn.proj."):
            out[f"{pre}.attention.output.dense.{rest.rsplit('.', 1)[1]}"] = value
        elif rest in ("ls1.gamma", "ls2.gamma"):
            out[f"{pre}.layer_scale{rest[2]}.lambda1"] = value
        else:
            out[f"{pre}.{rest}"] = value
    return out
