"""One contract test over every registered objective x every registered model, as
``tests/models/test_contract.py`` does for models: the loss is a finite scalar, every trainable
parameter (model and objective) gets a finite gradient over a small set of bags (annotated
positive, unannotated positive, negative), the logged terms are floats or scalar tensors, and
an empty bag is refused with a clear error. A combination the objective cannot train is
listed in ``UNSUPPORTED`` with the error it must raise (never a silent wrong result)."""

from __future__ import annotations

import re

import pytest
import torch

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.models import names as model_names
from histomil.objectives import TrainContext, create_objective, objective_names

D = 8
SMALL = {  # tiny models keep the grid fast on a shared machine
    "abmil": {"hidden": 16, "attn_dim": 8},
    "clam_sb": {"hidden": 16, "attn_dim": 8, "k_sample": 2},
    "clam_mb": {"hidden": 16, "attn_dim": 8, "k_sample": 2},
    "dsmil": {"hidden": 16, "q_dim": 8},
    "dtfd": {"hidden": 16, "attn_dim": 8},
    "hipt": {"hidden": 16, "heads": 2, "region_size": 4, "local_layers": 1},
    "max": {"hidden": 16},
    "mean": {"hidden": 16},
    "transmil": {"hidden": 16, "heads": 2, "landmarks": 4},
}
MHIM = ("mhim_v1", "mhim_v2")
# (objective, model) -> the start of the ValueError it must raise instead of training
UNSUPPORTED = {
    ("mhim_v2", "hipt"): "the recycle network cannot give coordinates to HIPT",
    ("mhim_v2", "dtfd"): "DTFD has no bag classifier (MILModel.classify)",
    **{
        (objective, pooling): message % name
        for pooling, name in (("max", "MaxPooling"), ("mean", "MeanPooling"))
        for objective, message in (
            ("rank_induction", "rank_induction needs attention scores; %s"),
            ("attention_induction", "attention_induction needs attention; %s"),
            ("mhim_v1", "%s has no attention scores"),  # v1 scores by attention
        )
    },
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(name: str, seed: int):
    torch.manual_seed(seed)
    return create_model(name, D, 1, **SMALL.get(name, {}))


def _bag(i: int, label: int, annotated: bool, n: int = 24) -> Bag:
    g = torch.Generator().manual_seed(i)
    labels = torch.zeros(n, dtype=torch.int8)
    if label:
        labels[:4] = 1
    x = torch.randn(n, D, generator=g) + labels[:, None].float()
    side = 6  # a 6 x 4 grid of 256 px patches
    coords = torch.stack([torch.arange(n) % side, torch.arange(n) // side], -1).float() * 256
    target = (labels == 1).float() / 4 if label and annotated else None
    return Bag(
        f"s{i}",
        x,
        label,
        coords=coords,
        patch_labels=(labels if annotated else torch.full((n,), -1, dtype=torch.int8)),
        attn_target=target,
    )


BAGS = [_bag(0, 1, True), _bag(1, 1, False), _bag(2, 0, True), _bag(3, 0, False)]


def _setup(objective: str, model_name: str):
    model = _model(model_name, 0)
    obj = create_objective(objective)
    base = _model(model_name, 1).state_dict() if obj.needs_baseline else None
    obj.setup(model, TrainContext(task="classification", n_classes=1, seed=0, baseline_state=base))
    return model, obj


def _cases():
    for o in objective_names():
        for m in model_names():
            yield pytest.param(o, m, id=f"{o}-{m}")


@pytest.mark.parametrize(("objective", "model_name"), list(_cases()))
def test_objective_trains_every_parameter_with_finite_losses(objective, model_name):
    if (objective, model_name) in UNSUPPORTED:
        with pytest.raises(ValueError, match="^" + re.escape(UNSUPPORTED[objective, model_name])):
            model, obj = _setup(objective, model_name)
            obj.train()
            obj(model, BAGS[0])
        return
    model, obj = _setup(objective, model_name)
    model.train()
    obj.train()
    for bag in BAGS:
        out = obj(model, bag)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss), (bag.slide_id, out.loss)
        for name, value in out.terms.items():
            assert isinstance(value, float | torch.Tensor), (name, type(value))
            value = torch.as_tensor(value)
            assert value.dim() == 0 and torch.isfinite(value), (name, value)
        out.loss.backward()
    trainable = [("model." + n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable += [("objective." + n, p) for n, p in obj.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad}"
    # validation/test path: the full bag, batched outputs
    obj.eval()
    model.eval()
    with torch.no_grad():
        pred = obj.predict(model, BAGS[0])
    assert pred.logits.shape == (1, 1) and torch.isfinite(pred.logits).all()


@pytest.mark.parametrize("objective", objective_names())
def test_an_empty_bag_is_refused(objective):
    model, obj = _setup(objective, "abmil")
    empty = Bag("empty", torch.zeros(0, D), 1, patch_labels=torch.zeros(0, dtype=torch.int8))
    with pytest.raises(ValueError, match="empty bag"):
        obj(model, empty)


def test_the_grid_covers_every_registered_objective_and_model():
    cases = {(p.values[0], p.values[1]) for p in _cases()}
    assert len(cases) == len(objective_names()) * len(model_names())
    assert set(UNSUPPORTED) <= cases
    assert set(MHIM) <= set(objective_names())
