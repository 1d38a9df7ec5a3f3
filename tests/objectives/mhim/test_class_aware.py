"""Class-aware instance probability (MHIM-v2 Eq. 6) per architecture (issue 15)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from histomil.models import create_model
from histomil.objectives.mhim.scoring import instance_scores

D = 8
SMALL = {
    "abmil": {"hidden": 16, "attn_dim": 8, "dropout": 0.0},
    "transmil": {"hidden": 16, "heads": 4, "landmarks": 4},
    "dsmil": {"hidden": 16, "dropout": 0.0},
}


def _bag(g: torch.Generator, label: int, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable toy bag: positive instances have feature 0 shifted by +4."""
    x = torch.randn(n, D, generator=g)
    pos = torch.zeros(n, dtype=torch.bool)
    if label:
        pos[torch.randperm(n, generator=g)[:4]] = True
        x[pos, 0] += 4.0
    return x, pos


def _trained(name: str):
    torch.manual_seed(0)
    model = create_model(name, in_dim=D, n_classes=1, **SMALL[name])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    model.train()
    for step in range(120):
        label = step % 2
        x, _ = _bag(g, label)
        out = model(x)
        loss = F.binary_cross_entropy_with_logits(out.logits[:, 0], torch.tensor([float(label)]))
        if out.aux_loss is not None:
            loss = 0.5 * loss + 0.5 * out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("name", list(SMALL))
def test_probability_ranks_true_positives_above_negatives(name):
    from sklearn.metrics import roc_auc_score

    model = _trained(name)
    g = torch.Generator().manual_seed(7)
    x, pos = _bag(g, 1)
    with torch.no_grad():
        h = model.project(x[None])
        out = model.aggregate(h, None)
        assert torch.sigmoid(out.logits[0, 0]) > 0.5  # the toy problem was learnt
        s = instance_scores(model, out, h, target=1, scoring="probability")
    assert roc_auc_score(pos.numpy(), s.numpy()) > 0.95


def test_dsmil_shares_add_up_to_the_bag_logit():
    torch.manual_seed(0)
    model = create_model("dsmil", in_dim=D, n_classes=2, **SMALL["dsmil"]).eval()
    h = model.project(torch.randn(1, 10, D))
    per = model.class_aware_logits(h)  # (1, 10, 2)
    bias = model.fcc.bias
    total = (per - bias).sum(dim=1) + bias
    assert torch.allclose(total, model.aggregate(h, None).logits, atol=1e-5)


def test_transmil_shares_add_up_to_the_first_layer_class_token_output():
    torch.manual_seed(0)
    model = create_model("transmil", in_dim=D, n_classes=2, **SMALL["transmil"]).eval()
    h = model.project(torch.randn(1, 7, D))  # 7 instances: 2 repeated to fill a 3 x 3 grid
    per = model.class_aware_logits(h)  # (1, 7, 2)
    # by linearity: sum_i (C(to_out(share_i)) - C(to_out(0))) = C(to_out(sum_i share_i)) - ...
    attn = model.layer1.attn
    x = torch.cat([model.cls_token, h, h[:, [0, 1]]], dim=1)
    q, k, v = (attn._split(t) for t in attn.to_qkv(model.layer1.norm(x)).chunk(3, dim=-1))
    a = torch.softmax((q[:, :, :1] * attn.scale) @ k.transpose(-1, -2), dim=-1)  # (1, h, 1, 10)
    a_inst = a[..., 1:8].clone()
    a_inst[..., :2] += a[..., 8:]  # the repeated tokens are instances 0 and 1
    total = (a_inst[:, :, 0, :, None] * v[:, :, 1:8]).sum(2).flatten(1)  # (1, heads * d)
    zero = model.classifier(attn.to_out(torch.zeros_like(total)))
    want = model.classifier(attn.to_out(total)) - zero
    assert torch.allclose((per - zero).sum(dim=1), want, atol=1e-5)
