"""TransMIL's defaults, its refusal of attention thresholding and its padded batches, pinned
(mutation testing of models/transmil.py, issue 17)."""

from __future__ import annotations

import pytest
import torch

from histomil.models import create_model
from histomil.models.transmil import TransMIL


def test_defaults_are_the_papers() -> None:
    model = TransMIL(1024, 2)
    assert model.fc[0].out_features == 512 and model.cls_token.shape == (1, 1, 512)
    for layer in (model.layer1, model.layer2):
        assert (layer.attn.heads, layer.attn.landmarks, layer.attn.dim_head) == (8, 256, 64)
    assert model.classifier.out_features == 2 and model.in_dim == 1024
    small = TransMIL(8, 2, hidden=16, heads=2, landmarks=4)
    for layer in (small.layer1, small.layer2):
        assert (layer.attn.heads, layer.attn.landmarks) == (2, 4)
    assert sum(p.numel() for p in model.parameters()) == 2_672_146  # docs/models.md


@pytest.mark.parametrize("threshold", [0.5, 1e-3])
def test_attention_thresholding_is_refused(threshold) -> None:
    msg = (
        r"^transmil pools through its class token, not a softmax over instances; "
        r"attention_threshold is not defined for it \(use 0\)$"
    )
    with pytest.raises(ValueError, match=msg):
        TransMIL(8, 2, attention_threshold=threshold)


def test_a_padded_batch_gives_each_bag_what_it_gives_alone() -> None:
    torch.manual_seed(0)
    model = create_model("transmil", in_dim=8, n_classes=2, hidden=16, heads=2, landmarks=4)
    model.eval()
    h = torch.randn(4, 6, 16)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[0, :5] = True  # five instances
    mask[1, 3] = True  # a single instance, not at the front
    # bag 2: all padding, between real bags
    mask[3, 1:] = True
    with torch.no_grad():
        out = model.aggregate(h, mask)
        assert out.logits.shape == (4, 2) and out.embedding.shape == (4, 16)
        for i, keep in ((0, [0, 1, 2, 3, 4]), (1, [3]), (3, [1, 2, 3, 4, 5])):
            alone = model.aggregate(h[i : i + 1, keep], None)
            torch.testing.assert_close(out.logits[i], alone.logits[0])
            torch.testing.assert_close(out.scores[i, keep], alone.scores[0])
        assert torch.equal(out.embedding[2], torch.zeros(16))
        assert torch.equal(out.scores[2], torch.zeros(6, 1))
        assert torch.equal(out.scores[~mask], torch.zeros(int((~mask).sum()), 1))
    w = out.weights[..., 0]
    assert torch.equal(w[~mask], torch.zeros_like(w[~mask]))
    torch.testing.assert_close(w[[0, 1, 3]].sum(dim=1), torch.ones(3))
    torch.testing.assert_close(w[0, :5], torch.softmax(out.scores[0, :5, 0], dim=0))
    assert "first_layer_logits" not in out.extras


def test_a_batch_without_padding_runs_whole_with_a_full_mask() -> None:
    torch.manual_seed(1)
    model = create_model("transmil", in_dim=8, n_classes=2, hidden=16, heads=2, landmarks=4)
    model.eval()
    h = torch.randn(2, 5, 16)
    with torch.no_grad():
        full = model.aggregate(h, torch.ones(2, 5, dtype=torch.bool))
        none = model.aggregate(h, None)
    torch.testing.assert_close(full.logits, none.logits)
    assert full.extras["first_layer_logits"].shape == (2, 2, 10)


def test_the_output_is_the_class_tokens_written_out() -> None:
    """Embedding = LayerNorm of the class token after the second layer; scores = its exact
    logits to each instance in that layer, averaged over heads; the bag's first tokens repeat
    to fill the square grid."""
    torch.manual_seed(2)
    model = create_model("transmil", in_dim=8, n_classes=2, hidden=16, heads=2, landmarks=4)
    model.eval()
    h = torch.randn(1, 7, 16)  # 3 x 3 grid: instances 0 and 1 repeated
    with torch.no_grad():
        out = model.aggregate(h, None)
        x = torch.cat([model.cls_token, h, h[:, [0, 1]]], dim=1)
        x = model.ppeg(model.layer1(x), 3)
        x2, logits = model.layer2.forward_with_query_logits(x, index=0)
        attn = model.layer2.attn
        q, k, _ = (attn._split(t) for t in attn.to_qkv(model.layer2.norm(x)).chunk(3, dim=-1))
        written = ((q[:, :, :1] * attn.scale) @ k.transpose(-1, -2))[:, :, 0]  # (1, heads, 10)
    torch.testing.assert_close(logits, written)
    torch.testing.assert_close(out.embedding, model.norm(x2[:, 0]))
    torch.testing.assert_close(out.logits, model.classifier(model.norm(x2[:, 0])))
    torch.testing.assert_close(out.scores[..., 0], written[:, :, 1:8].mean(dim=1))
