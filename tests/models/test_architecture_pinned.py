"""Pinned architectures of DS-MIL, CLAM-SB/MB and DTFD-MIL (issue 22): every layer with its
sizes, bias and dropout at the defaults the papers use, the settings' defaults and refusals,
and each forward pass recomputed by hand in float64 from the model's own weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import histomil.models.dtfd as dtfd_mod
from histomil.models import create_model
from histomil.models.dtfd import pseudo_bag_index

D = 16


def _layout(model: nn.Module) -> list[tuple]:
    """Every leaf module: (name, type, sizes / bias or dropout p)."""
    out = []
    for name, m in model.named_modules():
        if list(m.children()):
            continue
        if isinstance(m, nn.Linear):
            extra = (m.in_features, m.out_features, m.bias is not None)
        elif isinstance(m, nn.Conv1d):
            extra = (m.in_channels, m.out_channels, m.kernel_size[0])
        elif isinstance(m, nn.Dropout):
            extra = m.p
        else:
            extra = None
        out.append((name, type(m).__name__, extra))
    return out


PROJ = [("fc.0", "Linear", (D, 512, True)), ("fc.1", "ReLU", None), ("fc.2", "Dropout", 0.25)]


def _gated(prefix: str, dim: int, branches: int, p: float) -> list[tuple]:
    return [
        (f"{prefix}.v.0", "Linear", (512, dim, True)),
        (f"{prefix}.v.1", "Tanh", None),
        (f"{prefix}.v.2", "Dropout", p),
        (f"{prefix}.u.0", "Linear", (512, dim, True)),
        (f"{prefix}.u.1", "Sigmoid", None),
        (f"{prefix}.u.2", "Dropout", p),
        (f"{prefix}.w", "Linear", (dim, branches, True)),
    ]


@pytest.mark.parametrize("c", [1, 3])
def test_dsmil_layers_and_defaults(c):
    model = create_model("dsmil", in_dim=D, n_classes=c)
    assert _layout(model) == [
        *PROJ,
        ("instance_classifier", "Linear", (512, c, True)),
        ("q.0", "Linear", (512, 128, True)),
        ("q.1", "ReLU", None),
        ("q.2", "Linear", (128, 128, True)),
        ("q.3", "Tanh", None),
        ("v", "Identity", None),
        ("fcc", "Conv1d", (c, c, 512)),
    ]
    assert model.q_scale == 128**-0.5 and model.bag_weight == 0.5
    assert model.max_instance_loss is True
    assert model.attention_threshold == 0.0 and model.threshold_at_eval is True
    passing = create_model("dsmil", in_dim=D, n_classes=c, passing_v=True, hidden=32, q_dim=8)
    assert _layout(passing)[-3:] == [
        ("v.0", "Linear", (32, 32, True)),
        ("v.1", "ReLU", None),
        ("fcc", "Conv1d", (c, c, 32)),
    ]
    assert passing.q_scale == 8**-0.5


@pytest.mark.parametrize(
    "name, c", [("clam_sb", 1), ("clam_sb", 3), ("clam_mb", 1), ("clam_mb", 3)]
)
def test_clam_layers_and_defaults(name, c):
    model = create_model(name, in_dim=D, n_classes=c)
    k = max(c, 2)
    mb = name == "clam_mb"
    heads = (
        [(f"classifiers.{i}", "Linear", (512, 1, True)) for i in range(k)]
        if mb
        else [("classifier", "Linear", (512, c, True))]
    )
    assert _layout(model) == [
        *PROJ,
        *_gated("attention", 256, k if mb else 1, 0.25),
        *heads,
        *[(f"instance_classifiers.{i}", "Linear", (512, 2, True)) for i in range(k)],
    ]
    assert (model.k_sample, model.bag_weight, model.subtyping, model.inst_loss) == (
        8,
        0.7,
        False,
        "ce",
    )
    assert model.n_inst == k and model.attention_threshold == 0.0 and model.threshold_at_eval
    chosen = create_model(name, in_dim=D, n_classes=c, subtyping=True, inst_loss="svm")
    assert chosen.subtyping is True and chosen.inst_loss == "svm"
    with pytest.raises(ValueError) as err:
        create_model(name, in_dim=D, n_classes=c, inst_loss="hinge")
    assert str(err.value) == "inst_loss must be 'ce' or 'svm', got 'hinge'"
    for bad in ({"bag_weight": 1.01}, {"bag_weight": -0.01}, {"k_sample": 0}):
        with pytest.raises(ValueError) as err:
            create_model(name, in_dim=D, n_classes=c, **bad)
        assert str(err.value) == "need 0 <= bag_weight <= 1 and k_sample >= 1"
    edge = create_model(name, in_dim=D, n_classes=c, bag_weight=1.0, k_sample=1)
    assert (edge.bag_weight, edge.k_sample) == (1.0, 1)
    assert create_model(name, in_dim=D, n_classes=c, bag_weight=0.0).bag_weight == 0.0


@pytest.mark.parametrize("c", [1, 3])
def test_dtfd_layers_and_defaults(c):
    model = create_model("dtfd", in_dim=D, n_classes=c)
    assert _layout(model) == [
        ("fc.0", "Linear", (D, 512, False)),
        ("fc.1", "ReLU", None),
        ("fc.2", "Dropout", 0.0),
        *_gated("attention1", 128, 1, 0.0),
        ("classifier1", "Linear", (512, c, True)),
        *_gated("attention2", 128, 1, 0.0),
        ("classifier2", "Linear", (512, c, True)),
    ]
    assert (model.n_groups, model.seed, model.bag_weight) == (4, 0, 0.5)
    assert model.attention_threshold == 0.0 and model.threshold_at_eval is True
    with pytest.raises(ValueError) as err:
        create_model("dtfd", in_dim=D, n_classes=c, n_groups=0)
    assert str(err.value) == "n_groups must be >= 1, got 0"
    assert create_model("dtfd", in_dim=D, n_classes=c, n_groups=1).n_groups == 1


@pytest.mark.parametrize("name", ["dsmil", "clam_sb", "clam_mb", "dtfd"])
@pytest.mark.parametrize("c", [1, 3])
def test_sizes_and_threshold_settings_reach_the_base_class(name, c):
    model = create_model(name, in_dim=D, n_classes=c)
    assert model.in_dim == D and model.n_classes == c  # MHIM's projection probe reads in_dim
    other = create_model(
        name, in_dim=D, n_classes=c, attention_threshold=0.5, threshold_at_eval=False
    )
    assert other.attention_threshold == 0.5 and other.threshold_at_eval is False


# -- forward passes by hand (float64 numpy from the model's weights) ------------------------------
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _lin(layer: nn.Linear, x: np.ndarray) -> np.ndarray:
    b = 0.0 if layer.bias is None else _np(layer.bias)
    return x @ _np(layer.weight).T + b


def _softmax(s: np.ndarray) -> np.ndarray:  # over instances (axis 0)
    e = np.exp(s - s.max(axis=0))
    return e / e.sum(axis=0)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _gated_scores(att, h):
    return _lin(att.w, np.tanh(_lin(att.v[0], h)) * _sigmoid(_lin(att.u[0], h)))


def _model(name, c, **kw):
    torch.manual_seed(3)
    return create_model(name, in_dim=D, n_classes=c, hidden=12, dropout=0.0, **kw).eval()


def _x(n=7, seed=0):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("passing_v", [False, True])
def test_dsmil_forward_by_hand(c, passing_v):
    model, x = _model("dsmil", c, q_dim=5, passing_v=passing_v), _x()
    with torch.no_grad():
        out = model(x)
    h = np.maximum(_lin(model.fc[0], _np(x)), 0)  # (N, H)
    inst = _lin(model.instance_classifier, h)  # (N, C)
    crit = inst.argmax(axis=0)
    q = np.tanh(_lin(model.q[2], np.maximum(_lin(model.q[0], h), 0)))  # (N, Q)
    scores = q @ q[crit].T / np.sqrt(5)  # (N, C)
    weights = _softmax(scores)
    v = np.maximum(_lin(model.v[0], h), 0) if passing_v else h
    bag = weights.T @ v  # (C, H)
    w = _np(model.fcc.weight)  # (O, C, H)
    logits = np.einsum("och,ch->o", w, bag) + _np(model.fcc.bias)
    np.testing.assert_allclose(_np(out.logits[0]), logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.scores[0]), scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.weights[0]), weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.instance_logits[0]), inst, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.embedding[0]), bag.reshape(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        _np(out.extras["max_instance_logits"][0]), inst.max(axis=0), rtol=1e-6
    )
    assert out.branch_of_class == tuple(range(c)) and out.aux_loss is None


def test_dsmil_padding_is_never_the_critical_instance():
    """The critical instance is chosen among the real instances: padding rows with the largest
    instance logit change nothing."""
    model, x = _model("dsmil", 1), _x(6)
    with torch.no_grad():
        w = model.instance_classifier.weight[0]
        h_big = 50 * w / w.norm()  # a projected row whose instance logit is huge
        pad = torch.linalg.lstsq(model.fc[0].weight, (h_big - model.fc[0].bias)[:, None])
        big = pad.solution[:, 0].expand(2, D)
        feats = torch.cat([x, big])[None]
        mask = torch.tensor([[True] * 6 + [False] * 2])
        assert model.instance_classifier(model.project(feats))[0, 6:, 0].min() > 1.0 + (
            model.instance_classifier(model.project(x[None]))[0, :, 0].max()
        )
        padded = model(feats, mask=mask)
        plain = model(x[None])
    torch.testing.assert_close(padded.logits, plain.logits)
    torch.testing.assert_close(
        padded.extras["max_instance_logits"], plain.extras["max_instance_logits"]
    )


@pytest.mark.parametrize(
    "name, c", [("clam_sb", 1), ("clam_sb", 3), ("clam_mb", 1), ("clam_mb", 3)]
)
def test_clam_forward_by_hand(name, c):
    model, x = _model(name, c, attn_dim=6), _x()
    with torch.no_grad():
        out = model(x)
    h = np.maximum(_lin(model.fc[0], _np(x)), 0)
    scores = _gated_scores(model.attention, h)  # (N, R)
    weights = _softmax(scores)
    z = weights.T @ h  # (R, H)
    if name == "clam_sb":
        logits = _lin(model.classifier, z[0])
    else:
        per = np.array([_lin(clf, z[i])[0] for i, clf in enumerate(model.classifiers)])
        logits = per[1:] - per[:1] if c == 1 else per
    inst = np.stack(
        [_lin(clf, h)[:, 1] - _lin(clf, h)[:, 0] for clf in model.instance_classifiers], axis=1
    )
    np.testing.assert_allclose(_np(out.logits[0]), logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.scores[0]), scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.weights[0]), weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.embedding[0]), z.reshape(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.instance_logits[0]), inst, rtol=1e-5, atol=1e-6)
    k = max(c, 2)
    assert out.branch_of_class == (tuple(range(k)) if name == "clam_mb" else (0,))
    assert out.aux_loss is None


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("n", [3, 9])
def test_dtfd_forward_by_hand(c, n):
    model, x = _model("dtfd", c, attn_dim=5), _x(n)
    with torch.no_grad():
        out = model(x)
    index, valid = pseudo_bag_index(n, 4, torch.Generator().manual_seed(0))  # eval: seed 0
    h = np.maximum(_np(x) @ _np(model.fc[0].weight).T, 0)  # no bias
    scores, weights = np.zeros(n), np.zeros(n)
    feats = []
    for g in range(index.shape[0]):
        rows = index[g][valid[g]].numpy()
        s1 = _gated_scores(model.attention1, h[rows])[:, 0]
        w1 = _softmax(s1)
        feats.append(w1 @ h[rows])
        scores[rows], weights[rows] = s1, w1
    f = np.stack(feats)  # (G, H)
    w2 = _softmax(_gated_scores(model.attention2, f)[:, 0])
    for g in range(index.shape[0]):
        weights[index[g][valid[g]].numpy()] *= w2[g]
    z = w2 @ f
    np.testing.assert_allclose(_np(out.logits[0]), _lin(model.classifier2, z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.embedding[0]), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.scores[0, :, 0]), scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out.weights[0, :, 0]), weights, rtol=1e-5, atol=1e-6)
    assert out.aux_loss is None and abs(weights.sum() - 1) < 1e-9


def test_dtfd_training_splits_advance_and_evaluation_splits_repeat(monkeypatch):
    model, x = _model("dtfd", 1, attn_dim=5, seed=7), _x(9)
    model.eval()
    with torch.no_grad():
        a, b = model(x).logits, model(x).logits
    assert torch.equal(a, b)  # evaluation: a fresh generator seeded with `seed` per bag
    model.train()
    gen = torch.Generator().manual_seed(7)
    first = pseudo_bag_index(9, 4, gen)[0]
    second = pseudo_bag_index(9, 4, gen)[0]
    assert not torch.equal(first, second)
    seen = []
    real = pseudo_bag_index

    def spy(n, groups, generator):
        index, valid = real(n, groups, generator)
        seen.append(index)
        return index, valid

    monkeypatch.setattr(dtfd_mod, "pseudo_bag_index", spy)
    with torch.no_grad():
        model(x)
        model(x)
        model.eval()
        model(x)
    assert torch.equal(seen[0], first) and torch.equal(seen[1], second)
    fresh = pseudo_bag_index(9, 4, torch.Generator().manual_seed(7))[0]
    assert torch.equal(seen[2], fresh) and not torch.equal(
        fresh, pseudo_bag_index(9, 4, torch.Generator().manual_seed(0))[0]
    )  # the model's seed, not 0


def test_dtfd_all_padding_bag_gets_a_zero_embedding():
    """An all-padding bag first in the batch: zero embedding, the bias as logits, no loss; the
    real bag after it is unaffected."""
    model = _model("dtfd", 3, attn_dim=5)
    feats = torch.cat([torch.zeros(1, 4, D), _x(4)[None]])
    mask = torch.tensor([[False] * 4, [True] * 4])
    with torch.no_grad():
        out = model(feats, mask=mask, label=torch.tensor([2, 1]))
        alone = model(_x(4)[None], label=torch.tensor([1]))
    assert out.logits.shape == (2, 3)
    assert torch.equal(out.embedding[0], torch.zeros(12))
    torch.testing.assert_close(out.logits[0], model.classifier2.bias)
    torch.testing.assert_close(out.logits[1], alone.logits[0])
    assert torch.equal(out.weights[0], torch.zeros(4, 1))
    torch.testing.assert_close(out.aux_loss, alone.aux_loss / 2)  # the empty bag adds 0


@pytest.mark.parametrize("c", [1, 3])
def test_dsmil_all_padding_bag_has_max_instance_logits_0(c):
    """No real instance: the max-instance logits are 0 (not -inf or a huge negative number),
    so the max-instance loss of the batch stays finite."""
    model = _model("dsmil", c)
    feats = torch.cat([torch.zeros(1, 3, D), _x(3)[None]])
    mask = torch.tensor([[False] * 3, [True] * 3])
    with torch.no_grad():
        out = model(feats, mask=mask, label=torch.tensor([0, 1]))
    assert torch.equal(out.extras["max_instance_logits"][0], torch.zeros(c))
    assert torch.isfinite(out.aux_loss)
