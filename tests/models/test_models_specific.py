"""Model-specific behaviour: CLAM clustering, DS-MIL critical instance, DTFD split, HIPT regions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from histomil.models import create_model
from histomil.models.dtfd import pseudo_bag_index

D = 12


def test_clam_sb_clustering_loss_matches_hand_computation() -> None:
    torch.manual_seed(0)
    model = create_model("clam_sb", D, 1, hidden=8, attn_dim=4, k_sample=2).eval()
    assert model.bag_weight == pytest.approx(0.7)
    x = torch.randn(1, 10, D)
    out = model(x, label=torch.tensor([1]))
    h = model.project(x)[0]
    s = out.scores[0, :, 0]
    top, bottom = s.topk(2).indices, (-s).topk(2).indices
    logits = model.instance_classifiers[1](torch.cat([h[top], h[bottom]]))
    expected = F.cross_entropy(logits, torch.tensor([1, 1, 0, 0]))
    torch.testing.assert_close(out.aux_loss, expected)
    assert out.instance_logits.shape == (1, 10, 2)


def test_clam_k_sample_is_capped_and_subtyping_adds_out_of_class_terms() -> None:
    torch.manual_seed(0)
    plain = create_model("clam_mb", D, 3, hidden=8, attn_dim=4, k_sample=8).eval()
    sub = create_model("clam_mb", D, 3, hidden=8, attn_dim=4, k_sample=8, subtyping=True).eval()
    sub.load_state_dict(plain.state_dict())
    x, y = torch.randn(5, D), torch.tensor([2])  # 5 instances < 2 * k_sample
    a, b = plain(x, label=y).aux_loss, sub(x, label=y).aux_loss
    assert torch.isfinite(a) and b > a
    assert (
        create_model("clam_sb", D, 1).eval()(torch.randn(1, D), label=torch.tensor([1])).aux_loss
        == 0
    )


def test_clam_mb_binary_logit_is_difference_of_class_scores() -> None:
    torch.manual_seed(0)
    model = create_model("clam_mb", D, 1, hidden=8, attn_dim=4).eval()
    out = model(torch.randn(7, D))
    assert out.scores.shape == (1, 7, 2) and out.branch_of_class == (0, 1)
    z = out.embedding.view(1, 2, 8)
    expected = model.classifiers[1](z[:, 1]) - model.classifiers[0](z[:, 0])
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.class_scores(1), out.scores[..., 1])


def test_dsmil_critical_instance_and_max_instance_loss() -> None:
    torch.manual_seed(0)
    model = create_model("dsmil", D, 1, hidden=8, q_dim=4).eval()
    assert model.bag_weight == pytest.approx(0.5)
    x = torch.randn(1, 9, D)
    mask = torch.ones(1, 9, dtype=torch.bool)
    mask[0, 4] = False
    out = model(x, mask=mask, label=torch.tensor([1.0]))
    inst = out.instance_logits[0, :, 0].masked_fill(~mask[0], -torch.inf)
    crit = int(inst.argmax())
    # the critical instance's own score is ||q_crit||^2 / sqrt(q_dim); padding is never critical
    q = model.q(model.project(x))[0]
    torch.testing.assert_close(out.scores[0, crit, 0], (q[crit] @ q[crit]) / 2.0)
    expected = F.binary_cross_entropy_with_logits(inst.max().view(1), torch.ones(1))
    torch.testing.assert_close(out.aux_loss, expected)
    assert out.weights[0, 4, 0] == 0


def test_dtfd_split_sizes_and_seeded_reproducibility() -> None:
    index, valid = pseudo_bag_index(10, 4, torch.Generator().manual_seed(0))
    assert valid.sum(1).tolist() == [3, 3, 2, 2]
    assert sorted(index[valid].tolist()) == list(range(10))
    x = torch.randn(40, D)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model("dtfd", D, 1, hidden=8, attn_dim=4, seed=7).train()
        outs.append([model(x, label=torch.tensor([1])).logits for _ in range(2)])
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
    assert not torch.allclose(outs[0][0], outs[0][1])  # a new split every training step
    model.eval()
    torch.testing.assert_close(model(x).logits, model(x).logits)


def test_dtfd_tier1_loss_and_weights() -> None:
    torch.manual_seed(0)
    model = create_model("dtfd", D, 3, hidden=8, attn_dim=4).eval()
    out = model(torch.randn(23, D), label=torch.tensor([2]))
    assert out.aux_loss is not None and out.aux_loss > 0
    torch.testing.assert_close(out.weights.sum(1), torch.ones(1, 1))


def test_hipt_needs_coords_and_groups_by_region() -> None:
    from histomil.bags.io import grid_pitch
    from histomil.nn.regions import group_regions

    model = create_model("hipt", D, 1, hidden=8, heads=2, region_size=2, local_layers=1).eval()
    with pytest.raises(ValueError, match="coord"):
        model(torch.randn(5, D))
    coords = torch.tensor([[0, 0], [224, 0], [448, 0], [0, 224], [672, 672]]).float() + 1000
    assert grid_pitch(coords) == 224
    lay = group_regions(coords, 2)
    groups = sorted(sorted(lay.index[r][lay.valid[r]].tolist()) for r in range(len(lay.index)))
    # grid positions round(1000 / 224) = 4 ...: regions (2, 2): 0, 1, 3; (3, 2): 2; (3, 3): 4
    assert groups == [[0, 1, 3], [2], [4]]
    out = model(torch.randn(5, D), coords=coords)
    torch.testing.assert_close(out.weights.sum(1), torch.ones(1, 1))
    torch.testing.assert_close(torch.softmax(out.scores, 1), out.weights, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("gated", [True, False])
def test_abmil_parameter_count_at_1024(gated: bool) -> None:
    n = sum(p.numel() for p in create_model("abmil", 1024, 2, gated=gated).parameters())
    assert n == (657_283 if gated else 591_619)


@pytest.mark.parametrize(
    "name, params",
    [
        ("abmil", {"hidden": 8, "attn_dim": 4}),
        ("transmil", {"hidden": 8, "heads": 2, "landmarks": 4}),
        ("dsmil", {"hidden": 8, "q_dim": 4}),
    ],
)
def test_aggregate_accepts_kept_instances_plus_recycle_tokens(name: str, params: dict) -> None:
    """MHIM calls ``aggregate`` on kept projected instances with appended global tokens."""
    torch.manual_seed(0)
    model = create_model(name, D, 2, **params).train()
    h = model.project(torch.randn(2, 20, D))
    recycle = torch.randn(2, 3, 8, requires_grad=True)  # no coords for these
    tokens = torch.cat([h[:, :12], recycle], dim=1)  # (B, 15, H)
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[1, 10:12] = False  # bag 1 kept fewer instances
    out = model.aggregate(tokens, mask)
    assert out.logits.shape == (2, 2) and out.scores.shape[:2] == (2, 15)
    out.logits.sum().backward()
    assert recycle.grad is not None and recycle.grad.abs().sum() > 0
