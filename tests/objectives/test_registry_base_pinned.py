"""Pins for the objective registry and the objective contract's defaults (issue 22): which class a
name builds, how names are normalised, the exact refusals, and what an objective that overrides
nothing does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from histomil.bags.bag import Bag
from histomil.objectives import registry
from histomil.objectives.base import LossOutput, Objective, TrainContext
from histomil.objectives.mhim.strategy import MHIM, MHIMv1
from histomil.objectives.slide import AttentionInduction, BagObjective, RankInduction

EXPECTED = {
    "attention_induction": AttentionInduction,
    "bag": BagObjective,
    "mhim_v1": MHIMv1,
    "mhim_v2": MHIM,
    "rank_induction": RankInduction,
}


def test_every_name_builds_its_own_class():
    assert registry.objective_names() == sorted(EXPECTED)
    for name, cls in EXPECTED.items():
        assert registry.objective_class(name) is cls
        built = registry.create_objective(name)
        assert type(built) is cls and built.name == name


@pytest.mark.parametrize(
    "spelling, cls",
    [("Rank-Induction", RankInduction), ("MHIM-V2", MHIM), ("BAG", BagObjective)],
)
def test_names_ignore_case_and_hyphens(spelling, cls):
    assert registry.objective_class(spelling) is cls


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        registry.objective_class("rank induction")
    assert str(err.value) == (
        "unknown objective 'rank induction'; valid names: "
        "attention_induction, bag, mhim_v1, mhim_v2, rank_induction"
    )
    with pytest.raises(ValueError, match=r"^unknown objective 'mhim'; "):
        registry.create_objective("mhim")


def test_parameters_are_passed_and_unknown_ones_named():
    built = registry.create_objective("rank_induction", weight=0.25, sigma=2.0)
    assert built.weight == 0.25 and built.rank_params["sigma"] == 2.0
    with pytest.raises(ValueError) as err:
        registry.create_objective("bag", zeta=1, alpha=2, survival_alpha=0.1)
    assert str(err.value) == (
        "unknown parameter(s) for objective 'bag': alpha, zeta; accepted: survival_alpha"
    )
    with pytest.raises(ValueError) as err:
        registry.create_objective("attention_induction", margin=1.0)
    assert str(err.value) == (
        "unknown parameter(s) for objective 'attention_induction': margin; "
        "accepted: weight, reduction, survival_alpha"
    )


def test_train_context_defaults():
    ctx = TrainContext()
    assert (ctx.fold, ctx.task, ctx.n_classes, ctx.run_dir, ctx.seed) == (
        0,
        "classification",
        1,
        None,
        0,
    )
    assert ctx.baseline_state is None and ctx.extra == {}
    assert TrainContext().extra is not ctx.extra  # a fresh dict per context
    out = LossOutput(torch.tensor(1.0))
    assert out.terms == {} and out.output is None
    assert LossOutput(torch.tensor(1.0)).terms is not out.terms


class _Plain(Objective):
    """Overrides nothing but ``forward``: the contract's defaults."""

    def __init__(self, scale: float = 2.0, shift: int = 3) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, model, bag):  # pragma: no cover - not called
        raise AssertionError


def test_objective_defaults_do_nothing_and_predict_uses_the_full_bag():
    obj = _Plain()
    assert Objective.name == "objective" and Objective.needs_baseline is False
    assert _Plain.baseline_objective({"anything": 1}) == {"name": "bag", "params": {}}
    assert _Plain.resolved_params({"scale": 1.0}) == {"scale": 1.0, "shift": 3}
    assert _Plain.resolved_params(None) == {"scale": 2.0, "shift": 3}
    assert obj.epoch_stats() == {}
    model = _Recorder()
    feats, coords = torch.randn(5, 8), torch.arange(10).reshape(5, 2)
    bag = Bag("s", feats, 1, coords=coords)
    obj.setup(model, TrainContext())
    obj.on_epoch_start(0, 5)
    obj.after_optimizer_step(model)
    obj.set_steps_per_epoch(4)
    assert model.calls == [] and torch.equal(model.p, torch.zeros(3))
    assert obj.predict(model, bag) is model.out
    ((got_feats, got_coords, kwargs),) = model.calls
    assert got_feats is feats and got_coords is coords and kwargs == {}  # no label at inference


class _Recorder(nn.Module):
    """A stand-in model that records what it is called with (TransMIL/HIPT place instances by
    their coords, so inference must pass them)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(3))
        self.calls: list = []
        self.out = object()

    def forward(self, features, coords=None, **kwargs):
        self.calls.append((features, coords, kwargs))
        return self.out
