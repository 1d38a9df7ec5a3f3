"""MHIM regime options of issue 15: half-life momentum, teacher drift, beta_h decay length,
the warm_start control and the rank-induction baseline for rank x MHIM."""

from __future__ import annotations

import pytest
import torch

from histomil.bags.bag import Bag
from histomil.experiments.mhim import VARIANTS
from histomil.models import create_model
from histomil.objectives.base import TrainContext
from histomil.objectives.mhim import MHIM
from histomil.objectives.mhim.teacher import half_life_momentum
from histomil.objectives.slide import BagObjective
from histomil.training.config import TrainSettings
from histomil.training.trainer import fit, seed_everything

D = 6


def _bags(n: int, seed: int) -> list[Bag]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        label = i % 2
        x = torch.randn(10, D, generator=g)
        if label:
            x[:2, 0] += 3.0
        out.append(Bag(f"b{i}", x, label))
    return out


def _model(seed: int):
    torch.manual_seed(seed)
    return create_model("abmil", in_dim=D, n_classes=1, hidden=16, attn_dim=8)


def _setup(obj: MHIM, model) -> dict:
    baseline = _model(99).state_dict()
    obj.setup(model, TrainContext(seed=1, baseline_state=baseline))
    return baseline


def test_half_life_momentum_halves_the_gap():
    m = half_life_momentum(2.0, 5)
    assert m**10 == pytest.approx(0.5)
    with pytest.raises(ValueError):
        half_life_momentum(0.0, 5)


def test_half_life_option_sets_per_step_momentum_and_teacher_moves():
    settings = TrainSettings(max_epochs=3, warmup_epochs=3, patience=9, lr=1e-2)
    rows = {}
    for name, teacher in (("paper", {}), ("half", {"momentum_half_life_epochs": 1.0})):
        seed_everything(0)
        model = _model(0)
        obj = MHIM(teacher=teacher)
        _setup(obj, model)
        rows[name] = fit(model, obj, _bags(6, 1), _bags(4, 2), settings, "classification", 0)
    half = rows["half"].history
    # 6 bags, one step each: half-life 1 epoch = 6 steps
    assert half[0]["train_momentum"] == pytest.approx(0.5 ** (1 / 6))
    assert rows["paper"].history[0]["train_momentum"] == pytest.approx(0.9999)
    drift_paper = [r["teacher_drift"] for r in rows["paper"].history]
    drift_half = [r["teacher_drift"] for r in half]
    assert all(d > 0 for d in drift_paper) and drift_half[-1] > 50 * drift_paper[-1]
    assert drift_half == sorted(drift_half)


def test_half_life_needs_the_trainer():
    obj = MHIM(teacher={"momentum_half_life_epochs": 2.0})
    _setup(obj, _model(0))
    with pytest.raises(RuntimeError, match="steps per epoch"):
        obj.on_epoch_start(0, 10)
    with pytest.raises(ValueError, match="half_life"):
        MHIM(teacher={"momentum_half_life_epochs": 0.0})


def test_beta_h_decay_length():
    default, short = MHIM(), MHIM(masking={"decay_epochs": 10})
    for obj in (default, short):
        _setup(obj, _model(0))
        obj.on_epoch_start(5, 200)
    assert default.beta_h == pytest.approx(
        0.01 * (1 + torch.cos(torch.tensor(torch.pi * 5 / 200)).item()) / 2
    )
    assert short.beta_h == pytest.approx(0.005)
    short.on_epoch_start(50, 200)
    assert short.beta_h == 0.0


def test_warm_start_control_is_the_baseline_trained_on_full_bags():
    model = _model(0)
    obj = MHIM(**VARIANTS["warm_start"])
    baseline = _setup(obj, model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, baseline[k]), k
    assert obj.recycle is None
    bag = _bags(2, 3)[1]
    model.eval()  # no dropout: the loss is then deterministic
    out = obj(model, bag)
    assert out.terms["n_keep"] == 10 and out.terms["n_recycled"] == 0 and out.terms["n_high"] == 0
    plain = BagObjective()
    plain.setup(model, TrainContext())
    assert float(out.loss.detach()) == pytest.approx(float(plain(model, bag).loss.detach()))


def test_rank_mhim_uses_a_rank_induction_baseline():
    plain = {"masking": {"beta_h": 0.02}}
    assert MHIM.baseline_objective(plain) == {"name": "bag", "params": {}}
    ranked = {"rank": {"weight": 0.5, "sigma": 2.0}}
    assert MHIM.baseline_objective(ranked) == {
        "name": "rank_induction",
        "params": {"weight": 0.5, "sigma": 2.0},
    }


def test_fixed_momentum_variants_ignore_a_shared_half_life():
    from histomil.experiments.mhim import _merge

    shared = {"teacher": {"momentum_half_life_epochs": 10.0}}
    frozen = MHIM(**_merge(shared, VARIANTS["teacher_frozen"]))
    frozen.set_steps_per_epoch(50)
    assert frozen.base_momentum() == 1.0
    full = MHIM(**_merge(shared, VARIANTS["full"]))
    full.set_steps_per_epoch(50)
    assert full.base_momentum() == pytest.approx(0.5 ** (1 / 500))
