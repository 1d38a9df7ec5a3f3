"""Pinned trainer (issue 22): the epoch rows, the evaluation schedule, early stopping and the
prediction helpers, against values stated by hand."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.objectives import TrainContext
from histomil.objectives.slide import BagObjective
from histomil.training import trainer as T
from histomil.training.config import TrainSettings


class _Terms(BagObjective):
    """The bag objective plus two logged terms: the bag's index (tensor) and a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.steps_per_epoch_seen: list[int] = []
        self.after_steps = 0
        self.epochs: list[tuple[int, int]] = []

    def set_steps_per_epoch(self, n: int) -> None:
        self.steps_per_epoch_seen.append(n)

    def on_epoch_start(self, epoch: int, max_epochs: int) -> None:
        self.epochs.append((epoch, max_epochs))

    def after_optimizer_step(self, model) -> None:
        self.after_steps += 1

    def epoch_stats(self) -> dict[str, float]:
        return {"stat": 7.0}

    def forward(self, model, bag):
        out = super().forward(model, bag)
        out.terms["idx"] = torch.tensor(float(bag.slide_id[1:]))
        out.terms["const"] = 2.0
        return out


def _bags(n: int, seed: int) -> list[Bag]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randn(10, 4, generator=g)
        if i % 2:
            x[:2, 0] += 3.0
        out.append(Bag(f"b{i}", x, i % 2))
    return out


def _fit(settings: TrainSettings, n_train: int = 6, obj: _Terms | None = None, **kw):
    T.seed_everything(0)
    model = create_model("abmil", in_dim=4, n_classes=1, hidden=8, attn_dim=4)
    obj = obj or _Terms()
    obj.setup(model, TrainContext())
    rows: list[dict] = []
    result = T.fit(
        model, obj, _bags(n_train, 1), _bags(4, 2), settings, "classification", 0, rows.append,
        **kw,
    )  # fmt: skip
    return model, obj, result, rows


def test_rows_eval_schedule_and_early_stopping_by_hand():
    """lr 1e-12 leaves the float32 weights as they are: every validation loss is the same, so
    the first evaluated epoch stays the best and ``since_best`` grows by ``eval_every``."""
    s = TrainSettings(lr=1e-12, max_epochs=9, warmup_epochs=1, patience=4, eval_every=2)
    model, obj, result, rows = _fit(s, n_train=5)
    # evaluations after epochs 1, 3, 5: since_best 0, 2, 4 -> stop after epoch 5
    assert [r["epoch"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert ["val_loss" in r for r in rows] == [False, True, False, True, False, True]
    assert result.best_epoch == 1 and result.history == rows
    assert result.best_val_loss == rows[1]["val_loss"] == rows[3]["val_loss"]
    assert obj.epochs == [(e, 9) for e in range(6)]
    assert obj.steps_per_epoch_seen == [5] and obj.after_steps == 5 * 6
    for r in rows:
        assert r["train_idx"] == pytest.approx((0 + 1 + 2 + 3 + 4) / 5)  # the mean over bags
        assert r["train_const"] == 2.0 and r["stat"] == 7.0 and r["lr"] == 1e-12
        assert "attn_fallback" not in r  # no attention threshold
    assert set(rows[1]) == {
        "epoch", "train_bag", "train_total", "train_idx", "train_const", "lr", "stat",
        "val_loss", "val_auroc",
    }  # fmt: skip


def test_last_epoch_is_always_evaluated_and_patience_counts_evaluations():
    s = TrainSettings(lr=1e-12, max_epochs=3, warmup_epochs=3, patience=1, eval_every=2)
    _, _, result, rows = _fit(s, n_train=2)
    assert ["val_loss" in r for r in rows] == [False, True, True]
    assert result.best_epoch == 1
    # without warm-up the first repeated loss stops the run (patience 1 = one evaluation)
    s = TrainSettings(lr=1e-12, max_epochs=6, warmup_epochs=0, patience=1)
    _, _, result, rows = _fit(s, n_train=2)
    assert len(rows) == 2 and result.best_epoch == 0
    # warm-up holds the run until epoch warmup_epochs - 1 has run
    s = TrainSettings(lr=1e-12, max_epochs=6, warmup_epochs=4, patience=1)
    _, _, result, rows = _fit(s, n_train=2)
    assert len(rows) == 4


def test_select_from_epoch_and_errors():
    s = TrainSettings(lr=1e-12, max_epochs=4, warmup_epochs=4, patience=9, select_from_epoch=2)
    _, _, result, rows = _fit(s, n_train=2)
    assert result.best_epoch == 2 and len(rows) == 4
    model = create_model("abmil", in_dim=4, n_classes=1, hidden=8, attn_dim=4)
    obj = _Terms()
    obj.setup(model, TrainContext())
    with pytest.raises(ValueError) as err:
        T.fit(model, obj, _bags(2, 1), [], TrainSettings(max_epochs=2), "classification", 0)
    assert str(err.value) == "fit needs validation bags for model selection"
    bad = TrainSettings(max_epochs=3)
    object.__setattr__(bad, "select_from_epoch", 3)  # bypass the config's own check
    with pytest.raises(ValueError) as err:
        T.fit(model, obj, _bags(2, 1), _bags(2, 2), bad, "classification", 0)
    assert str(err.value) == "select_from_epoch (3) must be < max_epochs (3)"


def test_batch_accumulation_steps_and_checkpoints():
    s = TrainSettings(lr=1e-12, max_epochs=2, warmup_epochs=2, patience=9, batch_accumulation=2)
    states: list[dict] = []
    _, obj, result, rows = _fit(s, n_train=5, on_checkpoint=states.append)
    # 5 bags, 2 per step: steps after bags 2, 4 and the last (5): 3 per epoch
    assert obj.steps_per_epoch_seen == [3] and obj.after_steps == 6
    assert [st["epoch"] for st in states] == [0, 1]
    assert states[-1]["history"] == rows and states[0]["history"] == rows[:1]
    assert states[-1]["best"]["epoch"] == result.best_epoch == 0
    assert states[-1]["since_best"] == 1


def test_bag_probability_by_hand():
    assert T.bag_probability(np.array([0.0]), "classification").tolist() == [0.5]
    p = T.bag_probability(np.array([math.log(3.0)]), "classification")
    assert p.tolist() == pytest.approx([0.75]) and p.shape == (1,)
    p = T.bag_probability(np.array([0.0, math.log(3.0)]), "classification")
    assert p.tolist() == pytest.approx([0.25, 0.75])
    # survival: risk = -(S_1 + S_2), S_k = prod_{j<=k} sigmoid(-h_j); h = 0, 0: -(1/2 + 1/4)
    assert T.bag_probability(np.array([0.0, 0.0]), "survival").tolist() == pytest.approx([-0.75])
    assert T.bag_probability(np.array([0.0]), "survival").tolist() == pytest.approx([-0.5])


def test_val_auroc_by_hand():
    bags = [Bag(f"b{i}", torch.zeros(1, 2), lab) for i, lab in enumerate([0, 1, 1, 0])]
    preds = [T.Prediction(b.slide_id, np.array([v]), 0.0) for b, v in zip(bags, [0.1, 0.9, -1.0, -2.0], strict=True)]  # fmt: skip
    # positives 0.9, -1.0 vs negatives 0.1, -2.0: pairs won 1 + 1 + 0 + 1 = 3 of 4
    assert T._val_auroc(preds, bags, "classification") == pytest.approx(0.75)
    diverged = [*preds[:3], T.Prediction("b3", np.array([np.nan]), np.nan)]
    assert math.isnan(T._val_auroc(diverged, bags, "classification"))
    assert math.isnan(T._val_auroc(preds, bags, "survival"))
    one = [Bag("a", torch.zeros(1, 2), 1), Bag("b", torch.zeros(1, 2), 1)]
    assert math.isnan(T._val_auroc(preds[:2], one, "classification"))
    three = [Bag(f"c{i}", torch.zeros(1, 2), i % 3) for i in range(6)]
    perfect = [T.Prediction(b.slide_id, np.eye(3)[i % 3] * 5, 0.0) for i, b in enumerate(three)]
    assert T._val_auroc(perfect, three, "classification") == 1.0


def test_order_with_and_without_balanced_sampling():
    bags = [Bag(f"b{i}", torch.zeros(1, 2), int(i == 0)) for i in range(4)]
    s = TrainSettings()
    g = torch.Generator().manual_seed(5)
    assert (
        T._order(bags, s, g)
        == torch.randperm(4, generator=torch.Generator().manual_seed(5)).tolist()
    )
    bal = TrainSettings(balanced_sampling=True)
    g = torch.Generator().manual_seed(5)
    w = torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3], dtype=torch.double)
    want = torch.multinomial(w, 4, replacement=True, generator=torch.Generator().manual_seed(5))
    assert T._order(bags, bal, g) == want.tolist()
    counts = np.bincount([i == 0 for _ in range(200) for i in T._order(bags, bal, g)], minlength=2)
    assert 0.4 < counts[1] / counts.sum() < 0.6  # the lone positive drawn half the time


def test_predict_attention_class_and_instance_probabilities():
    T.seed_everything(0)
    model = create_model("dsmil", in_dim=4, n_classes=3, hidden=8)
    obj = BagObjective()
    obj.setup(model, TrainContext(n_classes=3))
    bag = _bags(1, 3)[0]
    (pred,) = T.predict(model, obj, [bag], "classification", keep_attention=True)
    with torch.no_grad():
        out = model(bag.features)
    cls = int(out.logits[0].argmax())
    assert np.allclose(pred.logits, out.logits[0].double().numpy())
    assert np.allclose(pred.instance_prob, torch.softmax(out.instance_logits[0], -1)[:, cls])
    w = out.class_weights(cls)
    assert np.allclose(pred.weights, w[0].numpy())
    (plain,) = T.predict(model, obj, [bag], "classification")
    assert plain.weights is None and plain.scores is None and plain.instance_prob is None
    assert plain.loss == pytest.approx(pred.loss)


def test_autocast_and_seed():
    assert isinstance(T._autocast(torch.device("cpu"), "float32"), type(T.contextlib.nullcontext()))
    with pytest.raises(ValueError) as err:
        T._autocast(torch.device("cpu"), "float16")
    assert str(err.value) == "precision must be float32 or bfloat16, got 'float16'"
    T.seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    T.seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a  # noqa: NPY002
    random.seed(3)
    assert a[0] == random.random()
    np.random.seed(3)  # noqa: NPY002
    assert a[1] == np.random.rand()  # noqa: NPY002
    torch.manual_seed(3)
    assert a[2] == torch.rand(1).item()


class _Diverging(_Terms):
    """The bag objective whose loss turns NaN from epoch ``at`` on (as a diverged fit's)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def forward(self, model, bag):
        out = super().forward(model, bag)
        if self.epochs[-1][0] >= self.at:
            out.loss = out.loss * float("nan")
            out.terms["total"] = out.loss.detach()
        return out


def _fit_diverging(at: int, settings: TrainSettings):
    model, _, result, rows = _fit(settings, n_train=4, obj=_Diverging(at))
    return model, result, rows


def test_a_fit_that_diverges_keeps_its_best_epoch_before_and_stops(caplog):
    s = TrainSettings(lr=1e-3, max_epochs=8, warmup_epochs=8, patience=9)
    with caplog.at_level("WARNING", logger="histomil.training.trainer"):
        model, result, rows = _fit_diverging(2, s)
    assert len(rows) == 3 and math.isnan(rows[2]["train_total"])  # stopped at the NaN epoch
    assert result.best_epoch in (0, 1) and math.isfinite(result.best_val_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the best state is restored
    assert [r.getMessage() for r in caplog.records] == [
        "epoch 2: training loss bag=nan, total=nan is not finite (training diverged); stopping, "
        "the selected epoch is the best one before it"
    ]


def test_a_fit_without_a_finite_validation_loss_is_an_error():
    s = TrainSettings(lr=1e-3, max_epochs=4, warmup_epochs=4, patience=9)
    with pytest.raises(T.TrainingDivergedError) as err:
        _fit_diverging(0, s)
    assert str(err.value).startswith(
        "no epoch from 0 on had a finite validation loss (last epoch 0: train loss nan, val loss "
        "nan): training diverged"
    )
    from histomil.cli._app import is_user_error

    assert is_user_error(err.value)  # the CLI prints it as one line and exits 1


def test_patience_starts_counting_at_select_from_epoch():
    """Patience 1 without warm-up cannot stop the run before an epoch was selectable."""
    s = TrainSettings(lr=1e-12, max_epochs=8, warmup_epochs=0, patience=1, select_from_epoch=2)
    _, _, result, rows = _fit(s, n_train=2)
    # epoch 2 is the first candidate (best), epoch 3 repeats its loss: one evaluation, stop
    assert len(rows) == 4 and result.best_epoch == 2


def test_adam_applies_weight_decay_and_lr_on_both_paths(monkeypatch):
    """First Adam step on a parameter with zero gradient: only the L2 term (wd * p) moves it,
    by lr * g / (|g| + eps) with g = wd * p, i.e. by lr against the sign of p."""

    def step(p: torch.nn.Parameter, opt: torch.optim.Optimizer) -> torch.Tensor:
        p.grad = torch.zeros_like(p)
        opt.step()
        return p.detach().clone()

    want = torch.tensor([2.0 - 0.01, -3.0 + 0.01, 0.0])
    p = torch.nn.Parameter(torch.tensor([2.0, -3.0, 0.0]))
    opt = T._adam([p], lr=0.01, weight_decay=0.1)
    assert opt.defaults["fused"] is True  # this torch fuses Adam on the CPU
    torch.testing.assert_close(step(p, opt), want, rtol=0, atol=1e-6)
    real = torch.optim.Adam

    def unfused(params, **kw):  # an older torch: fused is not accepted
        if kw.pop("fused", None):
            raise TypeError("fused")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", unfused)
    p = torch.nn.Parameter(torch.tensor([2.0, -3.0, 0.0]))
    opt = T._adam([p], lr=0.01, weight_decay=0.1)
    assert not opt.defaults.get("fused")
    torch.testing.assert_close(step(p, opt), want, rtol=0, atol=1e-6)


def test_a_generator_made_later_is_created_on_restore():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    state = torch.Generator().manual_seed(7).get_state()
    T.set_generator_states(model, {"0:gen": state})
    assert torch.equal(model[0].gen.get_state(), state)
    with pytest.raises(ValueError, match="missing submodule '1'"):
        T.set_generator_states(model, {"1:gen": state})


class _Counting(_Terms):
    """An objective with state: a buffer counting the epochs started."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def on_epoch_start(self, epoch: int, max_epochs: int) -> None:
        super().on_epoch_start(epoch, max_epochs)
        self.seen += 1


def test_resumed_fit_returns_the_objective_state_of_its_best_epoch():
    s = TrainSettings(lr=1e-2, max_epochs=4, warmup_epochs=4, patience=9)

    def run(**kw):
        _, obj, res, _ = _fit(s, n_train=4, obj=_Counting(), **kw)
        return obj, res

    states: list[dict] = []
    run(on_checkpoint=states.append)
    mid = states[1]
    mid["best"]["val_loss"] = -1.0  # unbeatable: the best stays the one before the interruption
    obj, res = run(resume=mid)
    best_seen = mid["best"]["objective"]["seen"]
    assert float(best_seen) == mid["best"]["epoch"] + 1
    assert torch.equal(res.objective_state["seen"], best_seen)
    assert torch.equal(obj.seen, best_seen)  # restored into the objective, not the last epoch's


def _model_without_dropout():
    return create_model("abmil", in_dim=4, n_classes=1, hidden=8, attn_dim=4, dropout=0.0)


def test_each_optimizer_step_sees_the_mean_gradient_of_its_bags(monkeypatch):
    """batch_accumulation B: bags 1..B of the epoch's order, then B+1..2B, ..., then the rest,
    each loss divided by B (lr 1e-12: the weights stay put, so every bag's gradient can be
    computed alone beforehand)."""
    T.seed_everything(0)
    model = _model_without_dropout()
    obj = BagObjective()
    obj.setup(model, TrainContext())
    train, val = _bags(5, 1), _bags(4, 2)
    params = list(model.parameters())
    alone = []
    for bag in train:
        model.zero_grad()
        obj(model, bag).loss.backward()
        alone.append([p.grad.clone() for p in params])
    model.zero_grad(set_to_none=True)
    s = TrainSettings(lr=1e-12, max_epochs=1, warmup_epochs=1, patience=9, batch_accumulation=2)
    order = T._order(train, s, torch.Generator().manual_seed(0))
    seen: list[list[torch.Tensor]] = []
    real = T._adam

    def recording_adam(ps, lr, weight_decay):
        opt = real(ps, lr, weight_decay)
        step = opt.step

        def recorded(*a, **kw):
            seen.append([p.grad.clone() for p in params])
            return step(*a, **kw)

        opt.step = recorded
        return opt

    monkeypatch.setattr(T, "_adam", recording_adam)
    T.fit(model, obj, train, val, s, "classification", 0)
    groups = [order[0:2], order[2:4], order[4:5]]
    assert len(seen) == len(groups)
    for got, group in zip(seen, groups, strict=True):
        for k, g in enumerate(got):
            want = sum(alone[i][k] for i in group) / 2
            assert torch.allclose(g, want, atol=1e-6, rtol=1e-5)


def test_evaluation_every_third_epoch_and_the_recorded_val_auroc():
    from sklearn.metrics import roc_auc_score

    s = TrainSettings(lr=1e-12, max_epochs=7, warmup_epochs=7, patience=99, eval_every=3)
    model, obj, _, rows = _fit(s, n_train=2)
    assert [r["epoch"] for r in rows if "val_loss" in r] == [2.0, 5.0, 6.0]  # and the last
    val = _bags(4, 2)
    preds = T.predict(model, obj, val, "classification")
    probs = [T.bag_probability(p.logits, "classification")[0] for p in preds]
    want = roc_auc_score([int(b.label) for b in val], probs)
    for r in rows:
        if "val_loss" in r:  # lr 1e-12: the same weights at every evaluation
            assert r["val_auroc"] == pytest.approx(want)
            assert r["val_loss"] == pytest.approx(np.mean([p.loss for p in preds]), rel=1e-6)


def test_survival_fit_validates_with_the_survival_loss():
    from histomil.objectives.slide import slide_loss

    T.seed_everything(0)
    model = create_model("abmil", in_dim=4, n_classes=3, hidden=8, attn_dim=4, dropout=0.0)
    obj = BagObjective()
    obj.setup(model, TrainContext(task="survival", n_classes=3))

    def bags(n, seed):
        g = torch.Generator().manual_seed(seed)
        return [
            Bag(f"s{i}", torch.randn(6, 4, generator=g), i % 3, event=i % 2, time=1.0 + i)
            for i in range(n)
        ]

    val = bags(4, 2)
    s = TrainSettings(lr=1e-12, max_epochs=1, warmup_epochs=1, patience=9)
    rows: list[dict] = []
    T.fit(model, obj, bags(3, 1), val, s, "survival", 0, rows.append)
    model.eval()
    with torch.no_grad():
        want = np.mean([float(slide_loss(model(b.features).logits, b, "survival")) for b in val])
    assert rows[0]["val_loss"] == pytest.approx(want, rel=1e-6)


def test_attn_fallback_is_zero_when_the_model_counted_nothing():
    """A thresholded model whose pooling never counted a fallback (events None) logs 0."""
    s = TrainSettings(lr=1e-12, max_epochs=1, warmup_epochs=1, patience=9)
    T.seed_everything(0)
    model = create_model("mean", in_dim=4, n_classes=1)  # pools without attention weights
    model.attention_threshold = 0.5
    obj = _Terms()
    obj.setup(model, TrainContext())
    rows: list[dict] = []
    T.fit(model, obj, _bags(2, 1), _bags(4, 2), s, "classification", 0, rows.append)
    assert rows[0]["attn_fallback"] == 0.0


class _PositiveOnly(BagObjective):
    """The bag loss plus a parameter's own term on positive bags only; records the parameter
    and the bag's label after every optimizer step."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = torch.nn.Parameter(torch.ones(3))
        self.after: list[tuple[int, torch.Tensor]] = []
        self._label = -1

    def forward(self, model, bag):
        out = super().forward(model, bag)
        self._label = int(bag.label)
        if self._label == 1:
            loss = out.loss + (self.extra**2).sum()
            return type(out)(loss, out.terms, out.output)
        return out

    def after_optimizer_step(self, model) -> None:
        self.after.append((self._label, self.extra.detach().clone()))


def test_a_parameter_without_a_gradient_in_a_step_does_not_move():
    """Gradients are cleared to None, so Adam skips a parameter a step did not use (zeroed
    gradients would move it on its momentum)."""
    T.seed_everything(0)
    model = _model_without_dropout()
    obj = _PositiveOnly()
    obj.setup(model, TrainContext())
    s = TrainSettings(lr=0.1, max_epochs=2, warmup_epochs=2, patience=9)
    T.fit(model, obj, _bags(6, 1), _bags(4, 2), s, "classification", 0)
    labels = [lab for lab, _ in obj.after]
    assert 0 in labels[1:] and 1 in labels  # negative steps after positive ones
    for (_, before), (label, now) in zip(obj.after, obj.after[1:], strict=False):
        if label == 0:
            assert torch.equal(now, before)
        else:
            assert not torch.equal(now, before)


def test_bfloat16_autocast_context_and_its_warning(monkeypatch):
    from histomil import hardware

    monkeypatch.setattr(hardware, "_WARNED", set())
    monkeypatch.setattr(hardware, "native_bf16", lambda device: False)
    with pytest.warns(hardware.EmulatedPrecisionWarning, match="not native on this cpu"):
        ctx = T._autocast(torch.device("cpu"), "bfloat16")
    with ctx:
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == (
            torch.bfloat16
        )
    assert not torch.is_autocast_enabled("cpu")


def test_a_bag_moved_for_training_has_float32_features_and_keeps_its_fields():
    half = torch.tensor([[0.5, 1.25], [2.0, -3.0], [0.0, 1.0]], dtype=torch.float16)
    bag = Bag(
        "b", half, 1,
        coords=torch.tensor([[0, 0], [0, 1], [1, 0]]),
        patch_labels=torch.tensor([1, 0, -1], dtype=torch.int8),
        attn_target=torch.tensor([1.0, 0.0, 0.0]),
    )  # fmt: skip
    moved = T._to(bag, torch.device("cpu"))
    assert moved.features.dtype == torch.float32
    assert torch.equal(moved.features, half.float())
    assert (moved.slide_id, moved.label) == ("b", 1)
    for k in ("coords", "patch_labels", "attn_target"):
        assert torch.equal(getattr(moved, k), getattr(bag, k))


class _NaNValidation(_Terms):
    """Trains normally; its validation predictions are NaN (so no epoch can be selected)."""

    def predict(self, model, bag):
        from dataclasses import replace

        out = super().predict(model, bag)
        return replace(out, logits=out.logits * float("nan"))


def test_the_divergence_error_states_the_last_training_loss():
    s = TrainSettings(lr=1e-12, max_epochs=2, warmup_epochs=2, patience=9)
    with pytest.raises(T.TrainingDivergedError) as err:
        _fit(s, n_train=2, obj=_NaNValidation())
    rows_total = float(str(err.value).split("train loss ")[1].split(",")[0])
    assert math.isfinite(rows_total)
    assert str(err.value) == (
        f"no epoch from 0 on had a finite validation loss (last epoch 1: train loss {rows_total}, "
        "val loss nan): training diverged or the data give NaN; nothing can be selected. Lower "
        "train.lr or check the inputs."
    )
