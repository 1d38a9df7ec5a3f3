"""MHIM-v2's student pass gathers the kept and masked instances with ``index_select`` and splits
them with ``split`` (issue 17); checked against the indexing and slicing it replaced (kept here as
the reference) on outputs and gradients, for each student with recycling on and off."""

from __future__ import annotations

import pytest
import torch

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.objectives.base import TrainContext
from histomil.objectives.mhim import MHIM

D = 10
SMALL = {
    "abmil": {"hidden": 16, "attn_dim": 8, "dropout": 0.0},
    "dsmil": {"hidden": 16, "dropout": 0.0},
    "transmil": {"hidden": 16, "heads": 4, "landmarks": 4, "dropout": 0.0},
}


def _reference_output(obj: MHIM, model, bag: Bag, keep, rec):
    """The student pass before issue 17: advanced indexing and two slices of ``h``."""
    x = bag.features.unsqueeze(0)
    use_recycle = obj.recycle is not None and rec.numel() > 0
    idx = torch.cat([keep, rec]) if use_recycle else keep
    h = model.project(x[:, idx])
    n_keep = keep.numel()
    tokens = h[:, :n_keep]
    if use_recycle:
        tokens = torch.cat([tokens, obj.recycle(h[:, n_keep:])], dim=1)
    return model.aggregate(tokens, None, None, torch.tensor([int(bag.label)]))


def _grads(module_list, value):
    params = [p for m in module_list for p in m.parameters() if p.requires_grad]
    return torch.autograd.grad(value, params, allow_unused=True)


@pytest.mark.parametrize("student", sorted(SMALL))
@pytest.mark.parametrize("recycle", [True, False])
def test_student_pass_equals_the_indexing_form(student, recycle):
    torch.manual_seed(0)
    model = create_model(student, in_dim=D, n_classes=1, **SMALL[student]).train()
    baseline = create_model(student, in_dim=D, n_classes=1, **SMALL[student]).state_dict()
    obj = MHIM(
        masking={"beta_h": 0.1, "beta_l": 0.4},
        recycle={"n_queries": 3, "heads": 1} if recycle else {"enabled": False},
    )
    obj.setup(model, TrainContext(seed=3, baseline_state=baseline))
    obj.train()
    g = torch.Generator().manual_seed(1)
    bag = Bag("s", torch.randn(60, D, generator=g), 1)
    state = obj.generator.get_state()
    mined, _, _ = obj.mine(bag)
    assert 0 < mined.keep.numel() < 60
    obj.generator.set_state(state)
    model.eval()  # TransMIL's attention has dropout of its own: compare without randomness
    new = obj(model, bag).output
    ref = _reference_output(obj, model, bag, mined.keep, mined.recycled)
    torch.testing.assert_close(new.logits, ref.logits)
    torch.testing.assert_close(new.embedding, ref.embedding)
    torch.testing.assert_close(new.scores, ref.scores)
    modules = [model] + ([obj.recycle] if obj.recycle is not None else [])
    for a, b in zip(
        _grads(modules, ref.logits.sum() + ref.embedding.square().sum()),
        _grads(modules, new.logits.sum() + new.embedding.square().sum()),
        strict=True,
    ):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(b, a)
