"""TransMIL gives its first layer's class-token logits with its output, and its class-aware
logits (MHIM's Eq. 6) reuse them instead of projecting the queries and keys again (issue 17):
the same logits as computed from scratch."""

from __future__ import annotations

import pytest
import torch

from histomil.models import create_model

D = 8


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("transmil", in_dim=D, n_classes=2, hidden=16, heads=2, landmarks=4).eval()


def _first_layer_logits(model, h):
    """The class token's first-layer logits written out: (B, heads, 1 + s*s)."""
    n = h.shape[1]
    side = int(torch.tensor(n).float().sqrt().ceil())
    idx = torch.arange(side * side - n) % n
    x = torch.cat([model.cls_token.expand(h.shape[0], -1, -1), h, h[:, idx]], dim=1)
    attn = model.layer1.attn
    q, k, _ = (attn._split(t) for t in attn.to_qkv(model.layer1.norm(x)).chunk(3, dim=-1))
    return ((q[:, :, :1] * attn.scale) @ k.transpose(-1, -2))[:, :, 0]


@pytest.mark.parametrize(("b", "n"), [(1, 7), (2, 9), (1, 30)])
def test_first_layer_logits_are_the_class_tokens_logits_of_the_first_layer(b, n):
    model = _model()
    h = torch.randn(b, n, 16)
    with torch.no_grad():
        out = model.aggregate(h, None)
        torch.testing.assert_close(out.extras["first_layer_logits"], _first_layer_logits(model, h))


@pytest.mark.parametrize(("b", "n"), [(1, 7), (2, 9), (1, 30)])
def test_class_aware_logits_with_the_output_match_those_computed_from_scratch(b, n):
    model = _model(n)
    h = torch.randn(b, n, 16)
    with torch.no_grad():
        out = model.aggregate(h, None)
        calls = []
        hook = model.layer1.attn.to_qkv.register_forward_hook(lambda *a: calls.append(1))
        reused = model.class_aware_logits(h, out)
        assert calls == []  # queries and keys are not projected again
        scratch = model.class_aware_logits(h)
        assert calls == [1]
        hook.remove()
    assert reused.shape == (b, n, 2)
    torch.testing.assert_close(reused, scratch, rtol=1e-5, atol=1e-6)


def test_an_output_without_first_layer_logits_or_of_another_bag_is_not_reused():
    model = _model()
    h = torch.randn(2, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        masked = model.aggregate(h, mask)  # bags run one by one: no first-layer logits
        assert "first_layer_logits" not in masked.extras
        other = model.aggregate(h[:, :5], None)  # the same 3 x 3 grid, 5 instances
        scratch = model.class_aware_logits(h)
        torch.testing.assert_close(model.class_aware_logits(h, masked), scratch)
        torch.testing.assert_close(model.class_aware_logits(h, other), scratch)
