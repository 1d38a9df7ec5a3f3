"""Pathology foundation encoders by name: exact architectures, preprocessing and output definitions.

Every entry is taken from the model card and the reference loader, cited per entry; the reference
loader for all of them is TRIDENT's ``trident/patch_encoder_models/load.py`` (mahmoodlab/TRIDENT,
commit a91fa84, read June 2026), which builds the same timm ``VisionTransformer`` with the same
constructor arguments and loads the published file with ``strict=True``. We call timm's
``VisionTransformer`` class directly with every argument spelled out, so a change of timm's
registry defaults (``vit_giant_patch14_dinov2`` etc.) cannot change the architecture silently.

Preprocessing is what the reference transform does to a square patch: resize to ``resize``
(``interpolation``), centre-crop ``input_size`` (a no-op when both are equal), normalise with
``mean``/``std``. ``output`` says which tokens make the feature vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Bioptimus' constants (H-optimus-0/1 model cards; TRIDENT HOptimus0/1InferenceEncoder).
HOPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))
# Lunit's constants (lunit-io/benchmark-ssl-pathology release notes; kaiko-eva's lunit wrapper).
LUNIT = ((0.70322989, 0.53606487, 0.66096631), (0.21716536, 0.26081574, 0.20723464))

CLS = "class token after the final norm"
CLS_MEAN = (
    "class token concatenated with the mean of the patch tokens (after the final norm; "
    "register tokens excluded)"
)


@dataclass(frozen=True)
class FoundationSpec:
    """One named encoder. ``vit`` are the ``timm.models.vision_transformer.VisionTransformer``
    keyword arguments (strings ``"swiglu_packed"``/``"silu"`` stand for timm's ``SwiGLUPacked``
    and ``torch.nn.SiLU``); ``kind`` picks the builder (``vit``, ``hf_dinov2``, ``conch_v15``)."""

    name: str
    card: str  # model card URL: where to get the weights
    architecture: str  # human-readable, recorded in bag files
    vit: dict[str, Any]
    feature_dim: int
    output: str
    pool: str = "cls"  # cls | cls_mean
    input_size: int = 224
    resize: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET[0]
    std: tuple[float, float, float] = IMAGENET[1]
    kind: str = "vit"
    hf_repo: str = ""  # Hugging Face repo id of the card (local cache lookup, never a download)
    files: tuple[str, ...] = ("pytorch_model.bin",)
    params: int = 0  # parameters of the feature model as built here (cards give 0.3B, 1.1B...)
    source: str = ""  # where the facts come from
    aliases: tuple[str, ...] = field(default_factory=tuple)


def _spec(**kw: Any) -> FoundationSpec:
    return FoundationSpec(**kw)


_VIT_L16 = dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16)
_VIT_H14 = dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16)
# DINOv2 ViT-g/14: SwiGLU MLP with hidden 4096 stored packed as 8192 (= 1536 * 2.66667 * 2).
_VIT_G14 = dict(
    patch_size=14,
    embed_dim=1536,
    depth=40,
    num_heads=24,
    init_values=1e-5,
    mlp_ratio=2.66667 * 2,
    mlp_layer="swiglu_packed",
    act_layer="silu",
)
# H-optimus-0 and -1 share architecture, output and normalisation (Bioptimus model cards).
_HOPTIMUS_ARCH = dict(
    architecture="ViT-g/14 (DINOv2 giant, timm vit_giant_patch14_reg4_dinov2), SwiGLU "
    "MLP, 4 register tokens, LayerScale 1e-5, 224 px",
    vit=dict(_VIT_G14, img_size=224, reg_tokens=4, no_embed_class=True),
    feature_dim=1536,
    output=CLS,
    mean=HOPTIMUS[0],
    std=HOPTIMUS[1],
)

SPECS: dict[str, FoundationSpec] = {
    s.name: s
    for s in (
        _spec(
            name="uni",
            card="https://huggingface.co/MahmoodLab/UNI",
            architecture="ViT-L/16 (timm VisionTransformer), LayerScale 1e-5, 224 px",
            vit=dict(img_size=224, init_values=1e-5, **_VIT_L16),
            feature_dim=1024,
            output=CLS,
            hf_repo="MahmoodLab/UNI",
            params=303_350_784,
            source="UNI model card; TRIDENT UNIInferenceEncoder (timm_kwargs, Resize(224) "
            "bilinear + CenterCrop(224), ImageNet)",
            aliases=("uni_v1",),
        ),
        _spec(
            name="uni2_h",
            card="https://huggingface.co/MahmoodLab/UNI2-h",
            architecture="ViT-H/14-style (embed 1536, depth 24, 24 heads), SwiGLU MLP, "
            "8 register tokens, no class pos-embed, LayerScale 1e-5, 224 px",
            vit=dict(
                img_size=224,
                patch_size=14,
                depth=24,
                num_heads=24,
                init_values=1e-5,
                embed_dim=1536,
                mlp_ratio=2.66667 * 2,
                no_embed_class=True,
                mlp_layer="swiglu_packed",
                act_layer="silu",
                reg_tokens=8,
            ),
            feature_dim=1536,
            output=CLS,
            hf_repo="MahmoodLab/UNI2-h",
            params=681_394_176,
            source="UNI2-h model card; TRIDENT UNIv2InferenceEncoder",
            aliases=("uni_v2",),
        ),
        _spec(
            name="virchow",
            card="https://huggingface.co/paige-ai/Virchow",
            architecture="ViT-H/14 (timm vit_huge_patch14_224), SwiGLU MLP (ratio 5.3375), "
            "LayerScale 1e-5, 224 px",
            vit=dict(
                img_size=224,
                init_values=1e-5,
                mlp_ratio=5.3375,
                mlp_layer="swiglu_packed",
                act_layer="silu",
                **_VIT_H14,
            ),
            feature_dim=2560,
            output=CLS_MEAN,
            pool="cls_mean",
            interpolation="bicubic",
            hf_repo="paige-ai/Virchow",
            params=631_229_184,
            source="Virchow model card (embedding = cat(class token, mean patch tokens)); "
            "TRIDENT VirchowInferenceEncoder (Resize(224) bicubic, ImageNet)",
        ),
        _spec(
            name="virchow2",
            card="https://huggingface.co/paige-ai/Virchow2",
            architecture="ViT-H/14 (timm vit_huge_patch14_224), SwiGLU MLP (ratio 5.3375), "
            "4 register tokens, LayerScale 1e-5, 224 px",
            vit=dict(
                img_size=224,
                init_values=1e-5,
                mlp_ratio=5.3375,
                mlp_layer="swiglu_packed",
                act_layer="silu",
                reg_tokens=4,
                **_VIT_H14,
            ),
            feature_dim=2560,
            output=CLS_MEAN,
            pool="cls_mean",
            interpolation="bicubic",
            hf_repo="paige-ai/Virchow2",
            params=631_239_424,
            source="Virchow2 model card (class token + mean of tokens 5: , registers 1-4 "
            "excluded); TRIDENT Virchow2InferenceEncoder",
        ),
        _spec(
            name="gigapath",
            card="https://huggingface.co/prov-gigapath/prov-gigapath",
            architecture="ViT-g (DINOv2 giant, patch 16), SwiGLU MLP, LayerScale 1e-5, 224 px "
            "(tile encoder)",
            vit=dict(_VIT_G14, img_size=224, patch_size=16, mlp_ratio=5.33334),
            feature_dim=1536,
            output=CLS,
            resize=256,
            interpolation="bicubic",
            hf_repo="prov-gigapath/prov-gigapath",
            params=1_134_953_984,
            source="Prov-GigaPath model card (Resize(256) bicubic + CenterCrop(224), ImageNet); "
            "TRIDENT GigaPathInferenceEncoder (vit_giant_patch14_dinov2, patch_size 16, "
            "mlp_ratio 5.33334)",
        ),
        _spec(
            name="h_optimus_0",
            card="https://huggingface.co/bioptimus/H-optimus-0",
            **_HOPTIMUS_ARCH,
            hf_repo="bioptimus/H-optimus-0",
            params=1_134_774_272,
            source="H-optimus-0 model card; TRIDENT HOptimus0InferenceEncoder (Resize(224), "
            "Bioptimus mean/std, global_pool token)",
            aliases=("hoptimus0",),
        ),
        _spec(
            name="h_optimus_1",
            card="https://huggingface.co/bioptimus/H-optimus-1",
            **_HOPTIMUS_ARCH,
            hf_repo="bioptimus/H-optimus-1",
            params=1_134_774_272,
            source="H-optimus-1 model card; TRIDENT HOptimus1InferenceEncoder",
            aliases=("hoptimus1",),
        ),
        _spec(
            name="phikon_v2",
            card="https://huggingface.co/owkin/phikon-v2",
            architecture="ViT-L/14 (DINOv2, Hugging Face Dinov2Model), LayerScale, 224 px",
            vit=dict(
                img_size=224,
                patch_size=14,
                embed_dim=1024,
                depth=24,
                num_heads=16,
                init_values=1e-5,
            ),
            feature_dim=1024,
            output="class token of last_hidden_state (after the final layer norm)",
            kind="hf_dinov2",
            hf_repo="owkin/phikon-v2",
            files=("model.safetensors", "pytorch_model.bin"),
            params=303_227_904,
            source="Phikon-v2 model card (last_hidden_state[:, 0]); TRIDENT "
            "Phikonv2InferenceEncoder (Resize(224) + CenterCrop(224), ImageNet)",
        ),
        _spec(
            name="lunit_vits8",
            card="https://huggingface.co/1aurent/vit_small_patch8_224.lunit_dino",
            architecture="ViT-S/8 (timm vit_small_patch8_224), DINO, 224 px",
            vit=dict(img_size=224, patch_size=8, embed_dim=384, depth=12, num_heads=6),
            feature_dim=384,
            output=CLS,
            mean=LUNIT[0],
            std=LUNIT[1],
            interpolation="bicubic",
            hf_repo="1aurent/vit_small_patch8_224.lunit_dino",
            files=("model.safetensors", "pytorch_model.bin"),
            params=21_670_272,
            source="Lunit benchmark-ssl-pathology release (mean/std); TRIDENT "
            "LunitS8InferenceEncoder (timm vit_small_patch8_224)",
            aliases=("lunit-vits8", "lunit"),
        ),
        _spec(
            name="conch_v15",
            card="https://huggingface.co/MahmoodLab/conchv1_5",
            architecture="CONCH v1.5 vision tower: ViT-L/16 trunk (LayerScale 1.0) + attentional "
            "pooler (1 query, 768-d, 8 heads) + LayerNorm, 448 px",
            vit=dict(img_size=224, init_values=1.0, **_VIT_L16),
            feature_dim=768,
            output="attentional-pooler query over all trunk tokens, then LayerNorm "
            "(CONCH v1.5 image embedding without the contrastive projection)",
            kind="conch_v15",
            input_size=448,
            resize=448,
            hf_repo="MahmoodLab/conchv1_5",
            files=("pytorch_model_vision.bin",),
            params=306_711_296,
            source="TRIDENT model_zoo/conchv1_5/conchv1_5.py (CONCHVisionTower, "
            "create_model_from_pretrained: Resize(448) bilinear + CenterCrop(448), ImageNet)",
        ),
    )
}

ALIASES: dict[str, str] = {a: s.name for s in SPECS.values() for a in s.aliases}

# Encoders of TRIDENT/STAMP whose code is not installable from PyPI (or needs `transformers`
# remote code) and that histomil therefore does not offer; see docs/features.md.
NOT_AVAILABLE: dict[str, str] = {
    "conch_v1": "needs the `conch` package (git only, not on PyPI)",
    "musk": "needs the `musk` package and fairscale (git only)",
    "hibou_l": "Hugging Face remote code (trust_remote_code), not a PyPI package",
    "ctranspath": "needs the patched `timm_ctp` fork",
    "keep": "Hugging Face remote code (trust_remote_code)",
}


def lookup(name: str) -> FoundationSpec | None:
    """The spec of ``name`` or one of its aliases (TRIDENT's names), or None."""
    return SPECS.get(ALIASES.get(name, name))


def vit_kwargs(spec: FoundationSpec) -> dict[str, Any]:
    """``spec.vit`` with timm classes substituted and the pooled-feature head settings."""
    import torch.nn as nn
    from timm.layers import SwiGLUPacked

    kw = dict(spec.vit)
    if kw.get("mlp_layer") == "swiglu_packed":
        kw["mlp_layer"] = SwiGLUPacked
    if kw.get("act_layer") == "silu":
        kw["act_layer"] = nn.SiLU
    kw["num_classes"] = 0
    kw["global_pool"] = "token" if spec.pool == "cls" else ""
    return kw


def build_model(spec: FoundationSpec, init: bool = True, **overrides: Any):
    """The feature model of ``spec`` with random weights (``overrides`` e.g. ``depth=1`` for
    tests; ``init=False`` skips timm's weight init, for shapes on the meta device);
    ``model(x)`` maps normalised (B, 3, S, S) to (B, feature_dim)."""
    from timm.models.vision_transformer import VisionTransformer

    kw = {**vit_kwargs(spec), **overrides}
    if not init:
        kw["weight_init"] = "skip"
    if spec.kind == "conch_v15":
        from histomil.features.foundation_conch import ConchVisionTower

        return ConchVisionTower(kw)
    vit = VisionTransformer(**kw)
    if spec.pool == "cls_mean":
        return ClsMean(vit)
    return vit


def convert_published(spec: FoundationSpec, state: dict, model) -> dict:
    """Map a published checkpoint (after wrapper/prefix stripping) to our model's key layout."""
    if spec.kind == "hf_dinov2":
        from histomil.features.foundation_conch import hf_dinov2_to_timm

        return hf_dinov2_to_timm(state)
    if spec.kind == "conch_v15":
        from histomil.features.foundation_conch import conch_pos_embed

        return conch_pos_embed(state, model)
    if spec.pool == "cls_mean":  # our wrapper holds the ViT as `vit.`
        return {f"vit.{k}": v for k, v in state.items()}
    return state


def _cls_mean_module():
    import torch
    import torch.nn as nn

    class _ClsMean(nn.Module):
        """Virchow's embedding: cat(class token, mean of patch tokens), registers excluded."""

        def __init__(self, vit) -> None:
            super().__init__()
            self.vit = vit

        def forward(self, x):
            tokens = self.vit(x)  # (B, prefix + patches, D) with global_pool=""
            cls = tokens[:, 0]
            patches = tokens[:, self.vit.num_prefix_tokens :]
            return torch.cat([cls, patches.mean(dim=1)], dim=-1)

    return _ClsMean


def ClsMean(vit):  # noqa: N802 - a class factory keeps torch imports lazy
    return _cls_mean_module()(vit)
