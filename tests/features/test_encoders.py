"""Encoder registry and weights: checkpoints in torchvision and timm layouts, caches, errors."""

from __future__ import annotations

import pytest
import torch

from histomil.features import (
    EncoderError,
    WeightsError,
    WeightsSpec,
    create_encoder,
    list_encoders,
    weights_identity,
)
from histomil.features.weights import unwrap_state_dict


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def _trunc_reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ResNet-50 up to layer3 + global average pooling, written out by hand: (B, 1024)."""
    m = model.eval()
    with torch.no_grad():
        act = m.relu if hasattr(m, "relu") else m.act1  # torchvision vs timm attribute names
        h = m.maxpool(act(m.bn1(m.conv1(x))))
        h = m.layer3(m.layer2(m.layer1(h)))
        return h.mean(dim=(2, 3))


@pytest.mark.parametrize("layout", ["torchvision", "timm"])
def test_resnet50_trunc_checkpoint_reproduces_in_memory_model(tmp_path, layout):
    torch.manual_seed(1)
    if layout == "torchvision":
        from torchvision.models import resnet50

        model = resnet50(weights=None)
        # DDP-style prefixes inside a training-checkpoint wrapper.
        ckpt = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    else:
        import timm

        model = timm.create_model("resnet50", pretrained=False)
        ckpt = model.state_dict()
    path = tmp_path / f"{layout}.pth"
    torch.save(ckpt, path)

    enc = create_encoder("resnet50_trunc", WeightsSpec(path=path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = enc.model(x)
    assert got.shape == (2, 1024) and enc.feature_dim == 1024
    torch.testing.assert_close(got, _trunc_reference(model, x), rtol=1e-4, atol=1e-5)
    assert enc.weights == weights_identity(path) and "sha256:" in enc.weights


def test_timm_model_checkpoint_with_head_loads_and_matches(tmp_path):
    import timm

    torch.manual_seed(2)
    model = timm.create_model("resnet18", pretrained=False).eval()  # with its fc head
    path = tmp_path / "resnet18.pth"
    torch.save({"model": model.state_dict()}, path)
    enc = create_encoder("timm:resnet18", WeightsSpec(path=path))
    assert enc.feature_dim == 512 and enc.input_size == 224
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            enc.model(x), model.forward_head(model.forward_features(x), pre_logits=True)
        )


def test_wrong_checkpoint_lists_missing_and_unexpected_keys(tmp_path):
    import timm

    path = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(WeightsError, match=r"r18\.pth does not fit.*(missing|shape mismatch)"):
        create_encoder("resnet50_trunc", WeightsSpec(path=path))
    bad = tmp_path / "bad.pth"
    sd = timm.create_model("resnet18", pretrained=False).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, bad)
    with pytest.raises(WeightsError, match="unexpected 1 key.*extra.weight"):
        create_encoder("timm:resnet18", WeightsSpec(path=bad))


def test_no_weights_available_explains_how_to_provide(empty_caches):
    with pytest.raises(WeightsError, match="--weights PATH.*--random-weights"):
        create_encoder("resnet50_trunc")
    with pytest.raises(WeightsError, match="Hugging Face cache"):
        create_encoder("timm:resnet18")
    with pytest.raises(WeightsError, match="does not exist"):
        create_encoder("resnet50", WeightsSpec(path="/nonexistent/w.pth"))


def test_torch_hub_cache_is_used_without_download(empty_caches, tmp_path):
    from torchvision.models import resnet50

    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(resnet50(weights=None).state_dict(), folder / "resnet50-0676ba61.pth")
    enc = create_encoder("resnet50")
    assert enc.feature_dim == 2048 and str(folder / "resnet50-0676ba61.pth") in enc.weights


def test_random_weights_warn_are_seeded_and_recorded():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        a = create_encoder("timm:resnet18", WeightsSpec(random=True, seed=5))
    with pytest.warns(UserWarning):
        b = create_encoder("timm:resnet18", WeightsSpec(random=True, seed=5))
    assert a.weights == "random"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.model(x), b.model(x))
    assert not any(p.requires_grad for p in a.model.parameters())


def test_unknown_names_and_conflicting_weights():
    with pytest.raises(EncoderError, match="valid: resnet50, resnet50_trunc"):
        create_encoder("resnet51")
    with pytest.raises(EncoderError, match="no_such_model"):
        create_encoder("timm:no_such_model", WeightsSpec(random=True))
    with pytest.raises(EncoderError, match="not both"):
        create_encoder("resnet50", WeightsSpec(path="x.pth", random=True))
    assert "timm:<name>" in list_encoders()


def test_unwrap_state_dict_variants():
    t = torch.zeros(2)
    assert unwrap_state_dict({"module.a": t, "module.b": t}).keys() == {"a", "b"}
    assert unwrap_state_dict({"model": {"backbone.a": t}}).keys() == {"a"}
    with pytest.raises(WeightsError, match="no state dict"):
        unwrap_state_dict({"epoch": 3})


def test_timm_hf_cache_is_used_without_download(empty_caches, tmp_path):
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("resnet18", pretrained=False)
    hub_id = model.pretrained_cfg["hf_hub_id"]  # e.g. timm/resnet18.a1_in1k
    snap = tmp_path / "hf" / "hub" / ("models--" + hub_id.replace("/", "--")) / "snapshots" / "abc"
    snap.mkdir(parents=True)
    save_file(model.state_dict(), str(snap / "model.safetensors"))
    enc = create_encoder("timm:resnet18")
    assert str(snap / "model.safetensors") in enc.weights
