"""Pinned model-internal losses: DS-MIL's max-instance loss, CLAM's instance clustering loss and
DTFD's pseudo-bag split and tier-1 loss, each recomputed by hand from the model's own layers
(numpy sorting and explicit loops instead of the model's topk / gather / index_put)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from histomil.models import create_model
from histomil.models.clam import smooth_top1_svm
from histomil.models.dtfd import pseudo_bag_index
from histomil.objectives.base import TrainContext
from histomil.objectives.slide import BagObjective

D = 6


def _x(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _model(name: str, n_classes: int = 1, **kw):
    torch.manual_seed(1)
    m = create_model(name, in_dim=D, n_classes=n_classes, hidden=8, dropout=0.0, **kw)
    return m.eval()


def _bce(logit: float, y: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


# -- DS-MIL --------------------------------------------------------------------------------------
@pytest.mark.parametrize("y", [0, 1])
def test_dsmil_max_instance_loss_one_logit(y):
    model = _model("dsmil")
    x = _x(9)
    with torch.no_grad():
        out = model(x, label=torch.tensor([y]))
        inst = model.instance_classifier(model.project(x[None]))[0, :, 0].tolist()
    assert out.aux_loss is not None and model.bag_weight == 0.5
    assert float(out.aux_loss) == pytest.approx(_bce(max(inst), y), rel=1e-5)
    assert float(out.extras["max_instance_logits"][0, 0]) == pytest.approx(max(inst), rel=1e-5)
    # the objective trains 0.5 * bag + 0.5 * max-instance
    obj = BagObjective()
    obj.setup(model, TrainContext())
    from histomil.bags.bag import Bag

    res = obj(model, Bag("s", x, y))
    bag = _bce(float(out.logits[0, 0]), y)
    assert res.terms["total"] == pytest.approx(0.5 * bag + 0.5 * _bce(max(inst), y), rel=1e-5)


def test_dsmil_max_instance_loss_multiclass_and_critical_instance():
    model = _model("dsmil", n_classes=3)
    x = _x(7, seed=2)
    with torch.no_grad():
        out = model(x, label=torch.tensor([2]))
        h = model.project(x[None])
        inst = model.instance_classifier(h)[0].numpy()  # (N, 3)
        q = model.q(h)[0].numpy()  # (N, Q)
    m = inst.max(axis=0)
    want = -(m[2] - math.log(np.exp(m).sum()))
    assert float(out.aux_loss) == pytest.approx(want, rel=1e-5)
    # raw score of instance i for class c: <q_i, q_crit(c)> / sqrt(Q)
    crit = inst.argmax(axis=0)
    scores = np.stack([q @ q[crit[c]] for c in range(3)], axis=1) / math.sqrt(q.shape[1])
    np.testing.assert_allclose(out.scores[0].numpy(), scores, rtol=1e-5, atol=1e-6)
    assert model(x).aux_loss is None  # no label, no loss
    off = _model("dsmil", max_instance_loss=False)
    assert off(x, label=torch.tensor([1])).aux_loss is None


# -- CLAM ----------------------------------------------------------------------------------------
def _clam_reference(model, x, y, k_sample, subtyping=False, svm=False) -> float:
    """CLAM instance loss by hand: top-k -> 1, bottom-k -> 0 for the true class (numpy argsort),
    top-k -> 0 for the other classes when subtyping."""
    with torch.no_grad():
        h = model.project(x[None])[0]
        s = model.attention(h[None])[0].numpy()  # (N, R)
    n = h.shape[0]
    k = min(k_sample, n // 2)
    if k == 0:
        return 0.0
    total = 0.0
    for c, clf in enumerate(model.instance_classifiers):
        col = s[:, c if model.multi_branch else 0]
        order = np.argsort(-col, kind="stable")
        if c == y:
            idx = np.concatenate([order[:k], order[::-1][:k]])
            target = [1] * k + [0] * k
        elif subtyping:
            idx, target = order[:k], [0] * k
        else:
            continue
        with torch.no_grad():
            logits = clf(h[torch.as_tensor(idx)]).numpy()
        for row, t in zip(logits, target, strict=True):
            if svm:  # smooth top-1 hinge, tau = alpha = 1
                margin = np.array([1.0, 1.0])
                margin[t] = 0.0
                term = math.log(np.exp(row + margin).sum()) - row[t]
            else:
                term = math.log(np.exp(row).sum()) - row[t]
            total += term / len(target)
    return total


@pytest.mark.parametrize("name", ["clam_sb", "clam_mb"])
@pytest.mark.parametrize("y", [0, 1])
def test_clam_clustering_loss_binary(name, y):
    model = _model(name, k_sample=3)
    x = _x(11, seed=3)
    with torch.no_grad():
        out = model(x, label=torch.tensor([y]))
    assert float(out.aux_loss) == pytest.approx(_clam_reference(model, x, y, 3), rel=1e-5)
    assert model.bag_weight == 0.7


@pytest.mark.parametrize("svm", [False, True])
@pytest.mark.parametrize("y", [0, 1, 2])  # every class is its own: not clamped, not label > 0
def test_clam_clustering_loss_subtyping_multiclass(svm, y):
    model = _model(
        "clam_mb", n_classes=3, k_sample=2, subtyping=True, inst_loss="svm" if svm else "ce"
    )
    x = _x(10, seed=4)
    with torch.no_grad():
        out = model(x, label=torch.tensor([y]))
    want = _clam_reference(model, x, y, 2, subtyping=True, svm=svm)
    assert float(out.aux_loss) == pytest.approx(want, rel=1e-5)


def test_clam_k_is_capped_at_half_the_bag_and_masks_are_respected():
    model = _model("clam_sb", k_sample=8)
    x = _x(5, seed=5)
    with torch.no_grad():
        out = model(x, label=torch.tensor([1]))
        assert float(out.aux_loss) == pytest.approx(_clam_reference(model, x, 1, 2), rel=1e-5)
        one = model(x[:1], label=torch.tensor([1]))
        assert float(one.aux_loss) == 0.0
        # padding is never sampled: a padded batch gives the same loss as the real instances
        pad = torch.cat([x, 100 * torch.ones(3, D)])[None]
        mask = torch.tensor([[True] * 5 + [False] * 3])
        padded = model(pad, mask=mask, label=torch.tensor([1]))
    assert float(padded.aux_loss) == pytest.approx(float(out.aux_loss), rel=1e-5)
    torch.testing.assert_close(padded.logits, out.logits)  # padding gets no attention weight


@pytest.mark.parametrize("name", ["clam_sb", "clam_mb"])
def test_clam_padding_first_and_a_one_instance_bag_in_a_batch(name):
    """Padding before the real instances (the selected rows are mapped back through the mask),
    and a bag with one real instance (no clustering loss) before a normal one: the batch's loss
    is the mean over its bags."""
    model = _model(name, k_sample=2)
    x = _x(7, seed=6)
    with torch.no_grad():
        alone = model(x, label=torch.tensor([1]))
        one = torch.cat([x[:1], torch.zeros(9, D)])
        feats = torch.stack([one, torch.cat([50 * torch.ones(3, D), x])])
        mask = torch.tensor([[True] + [False] * 9, [False] * 3 + [True] * 7])
        batch = model(feats, mask=mask, label=torch.tensor([1, 1]))
    torch.testing.assert_close(batch.logits[1], alone.logits[0])
    assert float(batch.aux_loss) == pytest.approx(float(alone.aux_loss) / 2, rel=1e-5)


def test_smooth_top1_svm_by_hand():
    logits = torch.tensor([[0.3, -0.2], [1.0, 2.0]])
    target = torch.tensor([0, 1])
    rows = []
    for (a, b), t in zip(logits.tolist(), target.tolist(), strict=True):
        shifted = [a + (t != 0), b + (t != 1)]
        rows.append(math.log(math.exp(shifted[0]) + math.exp(shifted[1])) - [a, b][t])
    assert float(smooth_top1_svm(logits, target)) == pytest.approx(sum(rows) / 2)
    tau = 0.5
    got = float(smooth_top1_svm(logits, target, tau=tau, alpha=2.0))
    rows = []
    for (a, b), t in zip(logits.tolist(), target.tolist(), strict=True):
        shifted = [(a + 2 * (t != 0)) / tau, (b + 2 * (t != 1)) / tau]
        lse = math.log(math.exp(shifted[0]) + math.exp(shifted[1]))
        rows.append(tau * (lse - [a, b][t] / tau))
    assert got == pytest.approx(sum(rows) / 2)


# -- DTFD ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "groups"), [(10, 4), (8, 4), (3, 4), (7, 1)])
def test_dtfd_pseudo_bags_are_array_split_chunks_of_a_seeded_permutation(n, groups):
    index, valid = pseudo_bag_index(n, groups, torch.Generator().manual_seed(7))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(7)).numpy()
    chunks = np.array_split(perm, min(groups, n))
    assert index.shape == (len(chunks), max(len(c) for c in chunks))
    for row, ok, chunk in zip(index, valid, chunks, strict=True):
        assert int(ok.sum()) == len(chunk)
        assert row[ok].tolist() == chunk.tolist()
        assert row[~ok].tolist() == [0] * int((~ok).sum())
    assert sorted(index[valid].tolist()) == list(range(n))


def test_dtfd_tiers_and_tier1_loss_by_hand():
    model = _model("dtfd", n_groups=3, seed=5)
    x = _x(8, seed=6)
    with torch.no_grad():
        out = model(x, label=torch.tensor([1]))
        index, valid = pseudo_bag_index(8, 3, torch.Generator().manual_seed(5))
        h = model.project(x[None])[0]
        feats, inst_w = [], {}
        for row, ok in zip(index, valid, strict=True):
            members = row[ok]
            s = model.attention1(h[members][None])[0, :, 0]
            w = torch.softmax(s, 0)
            feats.append((w[:, None] * h[members]).sum(0))
            inst_w.update({int(i): float(v) for i, v in zip(members, w, strict=True)})
        f = torch.stack(feats)  # (G, H)
        w2 = torch.softmax(model.attention2(f[None])[0, :, 0], 0)
        z = (w2[:, None] * f).sum(0)
        logit = float(model.classifier2(z)[0])
        tier1 = [_bce(float(v), 1) for v in model.classifier1(f)[:, 0]]
    assert float(out.logits[0, 0]) == pytest.approx(logit, rel=1e-5)
    assert float(out.aux_loss) == pytest.approx(sum(tier1) / 3, rel=1e-5)
    group_of = {
        int(i): g for g, (r, ok) in enumerate(zip(index, valid, strict=True)) for i in r[ok]
    }
    want = [inst_w[i] * float(w2[group_of[i]]) for i in range(8)]
    np.testing.assert_allclose(out.weights[0, :, 0].numpy(), want, rtol=1e-5)
    assert float(out.weights.sum()) == pytest.approx(1.0, rel=1e-5)
    assert model.bag_weight == 0.5
