from __future__ import annotations

import torch

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.objectives import TrainContext
from histomil.objectives.slide import BagObjective
from histomil.training.config import TrainSettings
from histomil.training.trainer import fit, predict, seed_everything


class _Counting(BagObjective):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0
        self.epochs: list[int] = []

    def on_epoch_start(self, epoch: int, max_epochs: int) -> None:
        self.epochs.append(epoch)

    def after_optimizer_step(self, model) -> None:
        self.steps += 1


def _bags(n: int, seed: int, pos_share: float = 0.5) -> list[Bag]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        label = int(i < n * pos_share)
        x = torch.randn(20, 4, generator=g)
        if label:
            x[:3, 0] += 4.0
        out.append(Bag(f"b{i}", x, label))
    return out


def _fit(settings: TrainSettings, train: list[Bag], seed: int = 0):
    seed_everything(seed)
    model = create_model("abmil", in_dim=4, n_classes=1, hidden=16, attn_dim=8)
    obj = _Counting()
    obj.setup(model, TrainContext())
    result = fit(model, obj, train, _bags(4, 9), settings, "classification", seed)
    return model, obj, result


def test_same_seed_same_numbers_and_accumulation_steps():
    settings = TrainSettings(max_epochs=3, warmup_epochs=3, patience=1, batch_accumulation=3)
    train = _bags(8, 1)
    m1, o1, r1 = _fit(settings, train)
    m2, _, r2 = _fit(settings, train)
    assert r1.history == r2.history and r1.best_epoch == r2.best_epoch
    assert all(
        torch.equal(a, b)
        for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True)
    )
    assert o1.epochs == [0, 1, 2]
    assert o1.steps == 3 * 3  # ceil(8 / 3) optimizer steps per epoch
    _, _, r3 = _fit(settings, train, seed=1)
    assert r3.history != r1.history


def test_early_stopping_after_warmup_restores_best():
    settings = TrainSettings(max_epochs=40, warmup_epochs=3, patience=2, lr=5e-2)
    model, obj, result = _fit(settings, _bags(8, 2))
    losses = [row["val_loss"] for row in result.history]
    assert len(losses) >= 3
    assert result.best_val_loss == min(losses)
    assert result.best_epoch == losses.index(min(losses))
    if len(losses) < 40:  # stopped early: patience epochs without improvement at the end
        assert len(losses) - 1 - result.best_epoch >= 2
    preds = predict(model, obj, _bags(4, 9), "classification")
    assert sum(p.loss for p in preds) / 4 == min(losses)


def test_balanced_sampling_draws_both_classes():
    settings = TrainSettings(max_epochs=2, warmup_epochs=2, balanced_sampling=True)
    train = _bags(10, 3, pos_share=0.2)  # 2 positives, 8 negatives
    seen: list[int] = []

    class _Recording(_Counting):
        def forward(self, model, bag):
            seen.append(int(bag.label))
            return super().forward(model, bag)

    seed_everything(0)
    model = create_model("abmil", in_dim=4, n_classes=1, hidden=16, attn_dim=8)
    obj = _Recording()
    obj.setup(model, TrainContext())
    fit(model, obj, train, _bags(4, 9), settings, "classification", 0)
    assert len(seen) == 20
    assert sum(seen) >= 6  # ~50 % positives instead of 20 %


class _Stateful(BagObjective):
    """An objective with state of its own (like MHIM's teacher): a buffer counting steps."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def after_optimizer_step(self, model) -> None:
        self.seen += 1


def test_objective_state_restored_with_the_best_epoch():
    settings = TrainSettings(max_epochs=40, warmup_epochs=3, patience=2, lr=5e-2)
    seed_everything(0)
    model = create_model("abmil", in_dim=4, n_classes=1, hidden=16, attn_dim=8)
    obj = _Stateful()
    obj.setup(model, TrainContext())
    train = _bags(8, 2)
    result = fit(model, obj, train, _bags(4, 9), settings, "classification", 0)
    # the buffer holds the step count at the end of the best epoch, not of the last one
    assert float(obj.seen) == len(train) * (result.best_epoch + 1)
    assert torch.equal(result.objective_state["seen"], obj.seen)
