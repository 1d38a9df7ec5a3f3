"""Learning-rate schedule, mid-fit resume, select_from_epoch and fallback counting (issue 15)."""

from __future__ import annotations

import math

import pytest
import torch

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.objectives import TrainContext
from histomil.objectives.slide import BagObjective
from histomil.training.config import ConfigError, TrainSettings, config_from_dict
from histomil.training.schedule import lr_factor, steps_per_epoch
from histomil.training.trainer import fit, seed_everything


def _bags(n: int, seed: int) -> list[Bag]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        label = i % 2
        x = torch.randn(12, 4, generator=g)
        if label:
            x[:2, 0] += 3.0
        out.append(Bag(f"b{i}", x, label))
    return out


def _run(settings: TrainSettings, threshold: float = 0.0, **kw):
    seed_everything(0)
    model = create_model(
        "abmil", in_dim=4, n_classes=1, hidden=8, attn_dim=4, attention_threshold=threshold
    )
    obj = BagObjective()
    obj.setup(model, TrainContext())
    result = fit(model, obj, _bags(6, 1), _bags(4, 9), settings, "classification", 0, **kw)
    return model, result


def test_cosine_values_by_hand():
    # 10 steps, 2 warm-up steps: 1/2, 2/2, then cos over the 8 remaining steps
    assert lr_factor(0, 10, 2) == pytest.approx(0.5)
    assert lr_factor(1, 10, 2) == pytest.approx(1.0)
    assert lr_factor(2, 10, 2) == pytest.approx(1.0)  # cos(0)
    assert lr_factor(6, 10, 2) == pytest.approx(0.5)  # half-way: (1 + cos(pi/2)) / 2
    assert lr_factor(10, 10, 2) == pytest.approx(0.0)
    assert lr_factor(6, 10, 2, min_ratio=0.1) == pytest.approx(0.55)
    assert steps_per_epoch(8, 3) == 3


def test_cosine_lr_in_history_and_none_keeps_lr():
    s = TrainSettings(max_epochs=4, warmup_epochs=4, patience=9, lr=1e-2, scheduler="cosine")
    _, result = _run(s)
    # 6 bags = 6 steps per epoch, 24 steps: lr after epoch e = lr * (1 + cos(pi * 6(e+1)/24)) / 2
    for e, row in enumerate(result.history):
        want = 1e-2 * (1 + math.cos(math.pi * 6 * (e + 1) / 24)) / 2
        assert row["lr"] == pytest.approx(want, abs=1e-12)
    _, flat = _run(TrainSettings(max_epochs=2, warmup_epochs=2, patience=9, lr=1e-2))
    assert [r["lr"] for r in flat.history] == [1e-2, 1e-2]


def test_resume_equals_uninterrupted():
    s = TrainSettings(
        max_epochs=5, warmup_epochs=5, patience=9, lr=1e-2, scheduler="cosine", lr_warmup_steps=3
    )
    full_model, full = _run(s)
    states: list[dict] = []
    _run(s, on_checkpoint=states.append)
    mid = states[1]  # state after epoch 1
    assert mid["epoch"] == 1 and mid["scheduler"]["last_epoch"] == 12
    torch.manual_seed(123)  # a different RNG state before resuming must not matter
    resumed_model, resumed = _run(s, resume=mid)
    assert resumed.history == full.history
    assert resumed.best_epoch == full.best_epoch
    for a, b in zip(
        full_model.state_dict().values(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_select_from_epoch_excludes_early_epochs():
    s = TrainSettings(max_epochs=4, warmup_epochs=4, patience=9, lr=1e-9)  # lr ~0: flat losses
    _, base = _run(s)
    _, late = _run(TrainSettings(**{**s.__dict__, "select_from_epoch": 2}))
    assert late.best_epoch >= 2
    losses = [r["val_loss"] for r in late.history]
    assert late.best_val_loss == min(losses[2:])
    assert base.best_epoch == losses.index(min(losses))
    with pytest.raises(ConfigError, match="select_from_epoch"):
        config_from_dict(
            {
                "data": {"manifest": "m", "bags": "b"},
                "train": {"max_epochs": 3, "select_from_epoch": 3},
            }
        )


def test_fallback_events_counted_per_epoch():
    s = TrainSettings(max_epochs=1, warmup_epochs=1, patience=9, lr=1e-9)
    _, t2 = _run(s, threshold=2.0)
    _, t05 = _run(s, threshold=0.5)
    _, off = _run(s)
    # a near-uniform softmax at initialisation: no weight exceeds T/K for T >= 1
    assert t2.history[0]["attn_fallback"] == 6.0
    assert t05.history[0]["attn_fallback"] < 6.0
    assert "attn_fallback" not in off.history[0]


def test_generator_states_cover_model_and_objective_generators():
    """The resumable state holds every torch.Generator of the model and the objective, also one
    created lazily (DTFD's pseudo-bag generator appears at the first training step)."""
    from histomil.objectives.slide import RankInduction
    from histomil.training.trainer import generator_states, set_generator_states

    model = create_model("dtfd", in_dim=4, n_classes=1, hidden=8, attn_dim=4)
    assert generator_states(model) == {}  # made on the first training step
    model.train()
    model(torch.randn(1, 12, 4))
    states = generator_states(model)
    assert list(states) == [":_train_generator"]
    before = torch.randint(0, 10**6, (3,), generator=model._train_generator)
    fresh = create_model("dtfd", in_dim=4, n_classes=1, hidden=8, attn_dim=4)
    set_generator_states(fresh, states)
    again = torch.randint(0, 10**6, (3,), generator=fresh._train_generator)
    assert torch.equal(before, again)
    objective = RankInduction()
    objective.setup(model, TrainContext(seed=5))
    assert list(generator_states(objective)) == [":generator"]
    with pytest.raises(ValueError, match="missing submodule 'head'"):
        set_generator_states(objective, {"head:gen": states[":_train_generator"]})


def test_dtfd_resume_equals_uninterrupted():
    """DTFD draws its pseudo-bags from its own generator: without it in the resumable state a
    resumed fit split the bags differently from an uninterrupted one."""
    s = TrainSettings(max_epochs=4, warmup_epochs=4, patience=9, lr=1e-2)

    def run(**kw):
        seed_everything(0)
        model = create_model("dtfd", in_dim=4, n_classes=1, hidden=8, attn_dim=4, n_groups=3)
        obj = BagObjective()
        obj.setup(model, TrainContext())
        return model, fit(model, obj, _bags(6, 1), _bags(4, 9), s, "classification", 0, **kw)

    full_model, full = run()
    states: list[dict] = []
    run(on_checkpoint=states.append)
    resumed_model, resumed = run(resume=states[1])
    assert resumed.history == full.history
    for a, b in zip(
        full_model.state_dict().values(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_resume_keeps_the_best_epoch_it_restores():
    """A best epoch recorded before the interruption that no later epoch beats is the one the
    resumed fit returns: its weights, epoch and objective state."""
    s = TrainSettings(max_epochs=4, warmup_epochs=4, patience=9, lr=1e-2)
    states: list[dict] = []
    _run(s, on_checkpoint=states.append)
    mid = states[1]
    mid["best"]["val_loss"] = -1.0  # unbeatable
    model, resumed = _run(s, resume=mid)
    assert resumed.best_epoch == mid["best"]["epoch"] and resumed.best_val_loss == -1.0
    for key, value in mid["best"]["state"].items():
        assert torch.equal(model.state_dict()[key], value), key
        assert torch.equal(resumed.state[key], value), key
    assert resumed.objective_state.keys() == mid["best"]["objective"].keys()
    bad = dict(mid, scheduler={"last_epoch": 3})
    with pytest.raises(ValueError) as err:
        _run(s, resume=bad)
    assert str(err.value) == "resume state and train.scheduler disagree (one has a schedule)"


def test_seed_everything_reduces_the_numpy_seed_modulo_2_32():
    import numpy as np

    from histomil.training.trainer import seed_everything as seed

    for value, numpy_seed in ((100, 100), (2**32 + 5, 5)):
        seed(value)
        got = np.random.random(3)  # noqa: NPY002
        np.random.seed(numpy_seed)  # noqa: NPY002
        assert np.array_equal(got, np.random.random(3))  # noqa: NPY002
