"""Named foundation encoders: full-size shapes on the meta device, published checkpoint layouts
loaded strictly at depth 1, wrong/missing checkpoints, and the local weights lookup."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from histomil.features import EncoderError, WeightsError, WeightsSpec, create_encoder
from histomil.features.encoders_foundation import find_weights, foundation_encoder
from histomil.features.foundation import SPECS, build_model
from histomil.features.foundation_conch import hf_dinov2_to_timm, timm_to_hf_dinov2

ALL = sorted(SPECS)


@pytest.fixture(autouse=True)
def _no_configured_weights(tmp_path, monkeypatch):
    """No user weights leak into tests: empty caches, no env mapping."""
    import os

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HISTOMIL_WEIGHTS_FILE", raising=False)
    for key in [k for k in os.environ if k.startswith("HISTOMIL_WEIGHTS_")]:
        monkeypatch.delenv(key)


def small_model(name: str, depth: int = 1):
    """``name``'s exact constructor at ``depth`` blocks, filled with seeded N(0, 0.02) values
    (timm's own init of a 1536-d block is slow on a loaded 2-core machine)."""
    torch.manual_seed(0)
    model = build_model(SPECS[name], init=False, depth=depth)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def published_state(name: str, model) -> dict:
    """The state dict of ``model`` in the key layout of ``name``'s released file."""
    spec = SPECS[name]
    if spec.kind == "hf_dinov2":  # owkin/phikon-v2 model.safetensors: transformers Dinov2Model
        return timm_to_hf_dinov2(model.state_dict())
    if spec.pool == "cls_mean":  # paige-ai files are plain timm VisionTransformer state dicts
        return model.vit.state_dict()
    return model.state_dict()  # timm layout; CONCH v1.5: trunk./attn_pool_contrast./ln_contrast.


def test_full_size_architectures_have_the_documented_size():
    """Built at full size on the meta device (no memory); the output dimension is checked by
    the depth-1 forward below (depth does not change it)."""
    for spec in SPECS.values():
        with torch.device("meta"):
            model = build_model(spec, init=False)
        assert sum(p.numel() for p in model.parameters()) == spec.params, spec.name


def test_full_size_parameter_counts_match_the_model_cards():
    """Rounded sizes the cards and papers state (ViT-L ~0.3B, ViT-H ~0.63B, ViT-g ~1.1B)."""
    cards = {
        "uni": 0.30e9,
        "uni2_h": 0.68e9,
        "virchow": 0.63e9,
        "virchow2": 0.63e9,
        "gigapath": 1.13e9,
        "h_optimus_0": 1.13e9,
        "h_optimus_1": 1.13e9,
        "phikon_v2": 0.30e9,
        "lunit_vits8": 21.7e6,
        "conch_v15": 0.31e9,
    }
    for name, expected in cards.items():
        assert abs(SPECS[name].params - expected) / expected < 0.02, name


@pytest.mark.parametrize("name", ALL)
def test_published_layout_loads_strictly_and_reproduces_the_model(tmp_path, name):
    spec = SPECS[name]
    source = small_model(name)
    path = tmp_path / ("model.safetensors" if spec.files[0].endswith("safetensors") else "w.bin")
    state = published_state(name, source)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    enc = foundation_encoder(spec, WeightsSpec(path=path), depth=1)
    if spec.kind == "conch_v15":  # resampled on load, tested on its own below
        source.trunk.pos_embed.data.copy_(enc.model.trunk.pos_embed.data)
    x = torch.randn(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        got, want = enc.model(x), source(x)
    assert got.shape == (2, spec.feature_dim) == (2, enc.feature_dim)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert "sha256:" in enc.weights and "depth=1" in enc.architecture


def test_virchow2_output_is_class_token_and_mean_of_patch_tokens_without_registers():
    model = small_model("virchow2")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = model.vit(x)
        out = model(x)
    assert tokens.shape[1] == 1 + 4 + 256  # class, 4 registers, 16 x 16 patches
    torch.testing.assert_close(out[:, :1280], tokens[:, 0])
    torch.testing.assert_close(out[:, 1280:], tokens[:, 5:].mean(1))


def test_conch_pooler_matches_the_reference_arithmetic():
    """TRIDENT's AttentionalPooler written out with einsum (query -> ln_q -> to_q, context ->
    ln_k -> to_kv, per-head softmax(q k^T / sqrt(d)) v, to_out)."""
    model = small_model("conch_v15")
    pool = model.attn_pool_contrast
    x = torch.randn(2, 17, 1024)
    with torch.no_grad():
        q = pool.to_q(pool.ln_q(pool.query))[None].expand(2, -1, -1)
        k, v = pool.to_kv(pool.ln_k(x)).chunk(2, dim=-1)
        q, k, v = (t.reshape(2, t.shape[1], 8, 96).permute(0, 2, 1, 3) for t in (q, k, v))
        attn = torch.einsum("bhid,bhjd->bhij", q * 96**-0.5, k).softmax(-1)
        ref = pool.to_out(torch.einsum("bhij,bhjd->bhid", attn, v).permute(0, 2, 1, 3).flatten(2))
        torch.testing.assert_close(pool(x), ref, rtol=1e-5, atol=1e-5)


def test_conch_file_position_embedding_is_resampled_like_the_reference(tmp_path):
    """The file's grid (here 28 x 28 for 448 px) goes to 14 x 14 (bilinear), then bicubic with
    scale (28 + 0.1) / 14 back to the 448-px grid, as TRIDENT's loader and forward do."""
    import torch.nn.functional as F
    from timm.layers import resample_abs_pos_embed

    spec = SPECS["conch_v15"]
    state = small_model("conch_v15").state_dict()
    state["trunk.pos_embed"] = torch.randn(1, 1 + 28 * 28, 1024)
    torch.save(state, tmp_path / "pytorch_model_vision.bin")
    enc = foundation_encoder(spec, WeightsSpec(path=tmp_path / "pytorch_model_vision.bin"), depth=1)
    small = resample_abs_pos_embed(
        state["trunk.pos_embed"],
        (14, 14),
        num_prefix_tokens=1,
        interpolation="bilinear",
        antialias=False,
    )
    grid = small[:, 1:].reshape(1, 14, 14, 1024).permute(0, 3, 1, 2)
    up = F.interpolate(grid, scale_factor=(28.1 / 14, 28.1 / 14), mode="bicubic")
    want = torch.cat([small[:, :1], up.permute(0, 2, 3, 1).reshape(1, -1, 1024)], dim=1)
    torch.testing.assert_close(enc.model.trunk.pos_embed.data, want)


def test_hf_dinov2_key_mapping_round_trips():
    model = small_model("phikon_v2", depth=2)
    hf = timm_to_hf_dinov2(model.state_dict())
    assert "encoder.layer.1.attention.attention.query.weight" in hf
    assert "embeddings.mask_token" in hf and "encoder.layer.0.layer_scale1.lambda1" in hf
    back = hf_dinov2_to_timm({f"dinov2.{k}": v for k, v in hf.items()})
    assert back.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back[k], v)


def test_checkpoint_of_another_model_is_refused_and_named(tmp_path):
    lunit = small_model("lunit_vits8", depth=12)
    torch.save(lunit.state_dict(), tmp_path / "lunit.bin")
    with pytest.raises(WeightsError) as err:
        foundation_encoder(SPECS["uni"], WeightsSpec(path=tmp_path / "lunit.bin"))
    msg = str(err.value)
    assert "huggingface.co/MahmoodLab/UNI" in msg and "'lunit_vits8' checkpoint" in msg
    assert "missing" in msg and "shape mismatch" in msg


def test_missing_checkpoint_names_the_model_card_and_the_ways_to_provide_it():
    with pytest.raises(WeightsError) as err:
        create_encoder("virchow2")
    msg = str(err.value)
    assert "https://huggingface.co/paige-ai/Virchow2" in msg
    assert "--weights" in msg and "HISTOMIL_WEIGHTS_VIRCHOW2" in msg
    with pytest.raises(EncoderError, match="not offered: needs the `conch` package"):
        create_encoder("conch_v1")


def test_weights_found_by_env_var_mapping_file_alias_and_hf_cache(tmp_path, monkeypatch):
    spec = SPECS["uni"]
    ckpt = tmp_path / "uni.bin"
    ckpt.write_bytes(b"x")
    monkeypatch.setenv("HISTOMIL_WEIGHTS_UNI", str(ckpt))
    assert find_weights(spec, WeightsSpec()) == ckpt
    monkeypatch.delenv("HISTOMIL_WEIGHTS_UNI")
    # TRIDENT's local_ckpts.json: empty entries skipped, its names are aliases of ours.
    mapping = tmp_path / "local_ckpts.json"
    mapping.write_text(json.dumps({"uni_v1": str(ckpt), "virchow": ""}))
    monkeypatch.setenv("HISTOMIL_WEIGHTS_FILE", str(mapping))
    assert find_weights(spec, WeightsSpec()) == ckpt
    with pytest.raises(WeightsError, match="paige-ai/Virchow"):
        find_weights(SPECS["virchow"], WeightsSpec())
    mapping.write_text(json.dumps({"uni": str(tmp_path / "gone.bin")}))
    with pytest.raises(WeightsError, match="gone.bin, which does not exist"):
        find_weights(spec, WeightsSpec())
    monkeypatch.delenv("HISTOMIL_WEIGHTS_FILE")
    snap = tmp_path / "hf" / "hub" / "models--MahmoodLab--UNI" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "pytorch_model.bin").write_bytes(b"x")
    assert find_weights(spec, WeightsSpec()) == snap / "pytorch_model.bin"


def test_trident_alias_builds_the_same_encoder_under_our_name():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = create_encoder("lunit-vits8", WeightsSpec(random=True))
    assert enc.name == "lunit_vits8" and enc.feature_dim == 384
    assert enc.mean == SPECS["lunit_vits8"].mean


# TRIDENT's timm calls (trident/patch_encoder_models/load.py, commit a91fa84): architecture name
# and keyword arguments, for the check that our explicit constructors build the same modules.
TRIDENT_TIMM = {
    "uni": ("vit_large_patch16_224", dict(img_size=224, patch_size=16, init_values=1e-5)),
    "uni2_h": (
        "vit_giant_patch14_224",
        dict(
            img_size=224,
            patch_size=14,
            depth=24,
            num_heads=24,
            init_values=1e-5,
            embed_dim=1536,
            mlp_ratio=2.66667 * 2,
            no_embed_class=True,
            mlp_layer="swiglu",
            act_layer="silu",
            reg_tokens=8,
        ),
    ),
    "virchow": (
        "vit_huge_patch14_224",
        dict(
            img_size=224,
            init_values=1e-5,
            mlp_ratio=5.3375,
            global_pool="",
            mlp_layer="swiglu",
            act_layer="silu",
        ),
    ),
    "virchow2": (
        "vit_huge_patch14_224",
        dict(
            img_size=224,
            init_values=1e-5,
            reg_tokens=4,
            mlp_ratio=5.3375,
            global_pool="",
            mlp_layer="swiglu",
            act_layer="silu",
        ),
    ),
    "gigapath": (
        "vit_giant_patch14_dinov2",
        dict(
            img_size=224,
            in_chans=3,
            patch_size=16,
            embed_dim=1536,
            depth=40,
            num_heads=24,
            mlp_ratio=5.33334,
        ),
    ),
    "h_optimus_0": (
        "vit_giant_patch14_reg4_dinov2",
        dict(img_size=224, global_pool="token", init_values=1e-5),
    ),
    "h_optimus_1": (
        "vit_giant_patch14_reg4_dinov2",
        dict(img_size=224, global_pool="token", init_values=1e-5),
    ),
    "lunit_vits8": ("vit_small_patch8_224", dict(img_size=224)),
    "phikon_v2": ("vit_large_patch14_dinov2", dict(img_size=224)),  # timm twin of Dinov2 L/14
}


@pytest.mark.parametrize("name", sorted(TRIDENT_TIMM))
def test_explicit_constructor_matches_the_reference_timm_call(name):
    """Same parameter names and shapes as the model TRIDENT builds with timm.create_model."""
    import timm
    from timm.layers import SwiGLUPacked

    arch, kw = TRIDENT_TIMM[name]
    kw = {**kw, "num_classes": 0, "weight_init": "skip"}
    kw = {
        k: {"swiglu": SwiGLUPacked, "silu": torch.nn.SiLU}.get(v, v)
        if isinstance(v, str) and k in ("mlp_layer", "act_layer")
        else v
        for k, v in kw.items()
    }
    with torch.device("meta"):
        ref = timm.create_model(arch, pretrained=False, **kw)
        ours = build_model(SPECS[name], init=False)
    ours = ours.vit if hasattr(ours, "vit") else ours
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(ours) == shapes(ref)
    assert type(ours.blocks[0].mlp) is type(ref.blocks[0].mlp)
    assert ours.num_prefix_tokens == ref.num_prefix_tokens and ours.global_pool == ref.global_pool
