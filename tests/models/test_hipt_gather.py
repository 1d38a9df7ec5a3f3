"""HIPT-style model (issue 17): row gathers with ``index_select`` and no gather/scatter for
unpadded bags, checked against the code they replaced (kept here as the reference) on outputs
and gradients, for a padded batch and an unpadded one; and the local stage's dropout."""

from __future__ import annotations

import pytest
import torch

from histomil.models import create_model
from histomil.models.base import masked_softmax
from histomil.nn.regions import group_regions

D = 6


def _reference_bag(m, h, coords):
    """``HIPT._bag`` before issue 17 (advanced indexing for the region tokens)."""
    lay = group_regions(coords, m.region_size, m.patch_pitch)
    tokens = h[lay.index] + m.pos[lay.cell]
    ctx = m._local(tokens, lay.valid)
    local_s = m.local_attn(ctx)
    local_w = masked_softmax(local_s, lay.valid)
    regions = (local_w * ctx).sum(1)
    g = m.glob(m.phi(regions)[None])
    global_s = m.global_attn(g)
    global_w = m.pool_weights(global_s, None)
    z = m.rho((global_w[0] * g[0]).sum(0))
    log_local = torch.log_softmax(local_s.masked_fill(~lay.valid[..., None], -torch.inf), 1)
    inst_s = (log_local + global_s[0][:, None])[..., 0]
    inst_w = (local_w * global_w[0][:, None])[..., 0]
    idx = lay.index[lay.valid]
    scores = h.new_zeros(h.shape[0]).index_put((idx,), inst_s[lay.valid])
    weights = h.new_zeros(h.shape[0]).index_put((idx,), inst_w[lay.valid])
    return z, scores, weights


def _reference(m, h, mask, coords):
    """``HIPT.aggregate`` before issue 17: every bag gathered by its kept indices."""
    b, n, _ = h.shape
    scores, weights, zs = h.new_zeros(b, n), h.new_zeros(b, n), []
    for i in range(b):
        keep = torch.arange(n) if mask is None else mask[i].nonzero()[:, 0]
        if keep.numel() == 0:
            zs.append(h.new_zeros(h.shape[-1]))
            continue
        zi, si, wi = _reference_bag(m, h[i, keep], coords[i, keep])
        rows = torch.full_like(keep, i)
        scores = scores.index_put((rows, keep), si)
        weights = weights.index_put((rows, keep), wi)
        zs.append(zi)
    z = torch.stack(zs)
    return m.classifier(z), z, scores, weights


def _inputs(b: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, n, 8, generator=g, dtype=torch.float64)
    # patches on a 224-px grid, scattered over several 2 x 2 regions
    cells = torch.stack([torch.randperm(49, generator=g)[:n] for _ in range(b)])
    coords = torch.stack([cells % 7, cells // 7], -1).double() * 224 + 1000
    return h, coords


@pytest.mark.parametrize("padded", [False, True])
def test_aggregate_equals_the_indexing_form_with_gradients(padded):
    torch.manual_seed(0)
    m = create_model("hipt", D, 1, hidden=8, heads=2, region_size=2, local_layers=1)
    m = m.double().eval()
    h, coords = _inputs(3, 20, seed=1)
    mask = None
    if padded:
        mask = torch.ones(3, 20, dtype=torch.bool)
        mask[0, 13:] = False
        mask[2, :] = False  # an all-padding bag
        mask[1, 4] = False
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    logits, z, s, w = _reference(m, h1, mask, coords)
    out = m.aggregate(h2, mask, coords)
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.embedding, z)
    torch.testing.assert_close(out.scores[..., 0], s)
    torch.testing.assert_close(out.weights[..., 0], w)
    gz, gs = torch.randn_like(z), torch.randn_like(s)
    params = [p for p in m.parameters() if p.requires_grad]
    ref = torch.autograd.grad(
        logits.sum() + (z * gz).sum() + (s * gs).sum(), [h1, *params], allow_unused=True
    )
    new = torch.autograd.grad(
        out.logits.sum() + (out.embedding * gz).sum() + (out.scores[..., 0] * gs).sum(),
        [h2, *params],
        allow_unused=True,
    )
    for a, b in zip(ref, new, strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(b, a)


def test_local_stage_has_no_dropout_by_default_as_hipts_vit4k():
    m = create_model("hipt", D, 1, hidden=8, heads=2)
    local = list(m.local.layers)
    assert local and all(layer.self_attn.dropout == 0.0 for layer in local)
    assert all(mod.p == 0.0 for layer in local for mod in layer.modules() if hasattr(mod, "p"))
    # the global stage keeps HIPT_LGP_FC's dropout 0.25
    assert all(layer.self_attn.dropout == 0.25 for layer in m.glob.layers)
    old = create_model("hipt", D, 1, hidden=8, heads=2, local_dropout=0.1)
    for layer in old.local.layers:
        assert layer.self_attn.dropout == 0.1
        assert layer.dropout.p == layer.dropout1.p == layer.dropout2.p == 0.1
    with pytest.raises(ValueError):
        create_model("hipt", D, 1, local_dropout=1.5)
