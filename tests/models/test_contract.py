"""One contract test parametrised over every registered model (shapes, gradients, masking...)."""

from __future__ import annotations

import pytest
import torch

from histomil.models import MILOutput, create_model, names

D = 24
SMALL = {  # small hidden sizes keep the group fast on a shared 2-core machine
    "abmil": {"hidden": 16, "attn_dim": 8},
    "clam_sb": {"hidden": 16, "attn_dim": 8, "k_sample": 3},
    "clam_mb": {"hidden": 16, "attn_dim": 8, "k_sample": 3},
    "dsmil": {"hidden": 16, "q_dim": 8},
    "dtfd": {"hidden": 16, "attn_dim": 8},
    "hipt": {"hidden": 16, "heads": 2, "region_size": 8, "local_layers": 1},
    "max": {"hidden": 16},
    "mean": {"hidden": 16},
    "transmil": {"hidden": 16, "heads": 2, "landmarks": 8},
}


def _make(name: str, n_classes: int = 1, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    params = {**SMALL.get(name, {}), **kw}
    return create_model(name, D, n_classes, **params)


def _coords(n: int, b: int = 1, seed: int = 0) -> torch.Tensor:
    """Distinct grid coordinates (B, N, 2) with a 256 px patch pitch."""
    g = torch.Generator().manual_seed(seed)
    side = int(n**0.5) + 2
    cells = torch.randperm(side * side, generator=g)[:n]
    xy = torch.stack([cells % side, cells // side], dim=-1) * 256
    return xy.float().unsqueeze(0).expand(b, n, 2).clone()


def _run(model, x, mask=None, coords=None, label=None) -> MILOutput:
    if coords is None and model.needs_coords:
        coords = _coords(x.shape[-2], x.shape[0] if x.dim() == 3 else 1)
    return model(x, mask=mask, coords=coords, label=label)


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("n_classes", [1, 3])
def test_output_shapes_and_finite(name: str, n_classes: int) -> None:
    model = _make(name, n_classes).eval()
    out = _run(model, torch.randn(2, 30, D))
    assert isinstance(out, MILOutput)
    assert out.logits.shape == (2, n_classes)
    assert out.embedding.dim() == 2 and out.embedding.shape[0] == 2
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.embedding).all()
    if model.has_attention:
        assert out.scores is not None and out.weights is not None
        assert out.scores.shape[:2] == (2, 30) and out.weights.shape == out.scores.shape
        assert torch.isfinite(out.scores).all()
        assert max(out.branch_of_class) < out.scores.shape[-1]
    if out.instance_logits is not None:
        assert out.instance_logits.shape[:2] == (2, 30)
    assert out.aux_loss is None  # no label -> no label-dependent loss
    assert len(out.branch_of_class) in (1, max(n_classes, 2))


@pytest.mark.parametrize("name", names())
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = _make(name, 2).train()
    x = torch.randn(2, 40, D)
    out = _run(model, x, label=torch.tensor([0, 1]))
    loss = out.logits.sum() + out.embedding.sum()
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    if out.instance_logits is not None:
        loss = loss + out.instance_logits.sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    nan = [
        n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()
    ]
    assert not nan


@pytest.mark.parametrize("name", names())
def test_padding_with_masked_instances_does_not_change_output(name: str) -> None:
    model = _make(name, 3).eval()
    x = torch.randn(1, 25, D)
    coords = _coords(35)
    ref = _run(model, x, coords=coords[:, :25])
    padded = torch.cat([x, 100 * torch.randn(1, 10, D)], dim=1)
    mask = torch.zeros(1, 35, dtype=torch.bool)
    mask[:, :25] = True
    out = _run(model, padded, mask=mask, coords=coords)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-4, rtol=1e-4)
    if ref.scores is not None:
        torch.testing.assert_close(out.scores[:, :25], ref.scores, atol=1e-4, rtol=1e-4)
        assert torch.all(out.weights[:, 25:] == 0)


@pytest.mark.parametrize("name", names())
def test_batch_of_unequal_bags_matches_single_bags(name: str) -> None:
    model = _make(name, 1).eval()
    a, b = torch.randn(20, D), torch.randn(12, D)
    ca, cb = _coords(20, seed=1)[0], _coords(12, seed=2)[0]
    x = torch.zeros(2, 20, D)
    x[0], x[1, :12] = a, b
    coords = torch.zeros(2, 20, 2)
    coords[0], coords[1, :12] = ca, cb
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[0], mask[1, :12] = True, True
    batched = _run(model, x, mask=mask, coords=coords)
    single_b = _run(model, b, coords=cb)
    torch.testing.assert_close(batched.logits[1], single_b.logits[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", names())
def test_permutation_invariance(name: str) -> None:
    model = _make(name, 2).eval()
    x = torch.randn(1, 33, D)
    coords = _coords(33)
    perm = torch.randperm(33, generator=torch.Generator().manual_seed(3))
    ref = _run(model, x, coords=coords)
    out = _run(model, x[:, perm], coords=coords[:, perm])
    if model.permutation_invariant:
        torch.testing.assert_close(out.logits, ref.logits, atol=1e-4, rtol=1e-4)
        if ref.scores is not None:
            torch.testing.assert_close(out.scores, ref.scores[:, perm], atol=1e-4, rtol=1e-4)
    else:  # documented exceptions (TransMIL's PPEG, DTFD's pseudo-bag split) must still run
        assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", names())
def test_one_instance_bag(name: str) -> None:
    model = _make(name, 1)
    for mode in (model.train, model.eval):
        mode()
        out = _run(model, torch.randn(1, D), label=torch.tensor([1]) if model.training else None)
        assert out.logits.shape == (1, 1) and torch.isfinite(out.logits).all()
        if out.weights is not None:
            torch.testing.assert_close(out.weights.sum(1), torch.ones_like(out.weights.sum(1)))


@pytest.mark.parametrize("name", names())
def test_hundred_thousand_instances_on_cpu(name: str) -> None:
    model = _make(name, 1).eval()
    n = 100_000
    with torch.inference_mode():
        x = torch.randn(n, D)
        out = _run(model, x)
    assert out.logits.shape == (1, 1) and torch.isfinite(out.logits).all()
    if out.scores is not None:
        assert out.scores.shape[:2] == (1, n)


def test_unknown_name_and_params() -> None:
    with pytest.raises(ValueError, match="abmil"):
        create_model("nope", D, 1)
    with pytest.raises(ValueError, match="bogus"):
        create_model("abmil", D, 1, bogus=3)


@pytest.mark.parametrize("name", names())
def test_survival_head_has_one_logit_per_bin(name: str) -> None:
    model = _make(name, 4).eval()
    out = _run(model, torch.randn(17, D))
    assert out.logits.shape == (1, 4)


@pytest.mark.parametrize("name", names())
def test_all_padding_bag_in_a_batch_stays_finite(name: str) -> None:
    model = _make(name, 2).eval()
    x = torch.randn(2, 10, D)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1] = False
    out = _run(model, x, mask=mask, label=torch.tensor([1, 0]))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.embedding).all()
    if out.weights is not None:
        assert torch.all(out.weights[1] == 0)
    if out.aux_loss is not None:
        assert torch.isfinite(out.aux_loss)
    single = _run(model, x[:1])
    torch.testing.assert_close(out.logits[:1], single.logits, atol=1e-4, rtol=1e-4)
