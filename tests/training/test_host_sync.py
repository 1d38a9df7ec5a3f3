"""A training step never reads a floating-point tensor back to Python (no per-step host sync).

Loss terms stay detached tensors during the epoch; the trainer sums them on the device and reads
them once per epoch. The test counts tensor-to-Python conversions (``item``, ``float``, ``int``,
``bool``, ``tolist``, ``numpy``) of floating-point tensors (losses, scores, embeddings) during
``objective(model, bag)`` and the backward pass, for every registered objective, and during a
whole :func:`fit` epoch, where only the once-per-epoch reads may happen.

Integer/boolean tensors (patch labels) are not counted: rank pair sampling and MHIM's masking
pick instances by label and by count, which needs the counts on the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from histomil.bags.bag import Bag
from histomil.models import create_model, names
from histomil.objectives import TrainContext, create_objective
from histomil.objectives.registry import objective_names
from histomil.training.config import TrainSettings
from histomil.training.trainer import fit

D = 8
SMALL = {
    "abmil": {"hidden": 16, "attn_dim": 8},
    "transmil": {"hidden": 16, "heads": 8, "landmarks": 4},
    "dsmil": {"hidden": 16},
}
CONVERSIONS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


@contextmanager
def count_float_reads() -> Iterator[list[str]]:
    """Patch ``torch.Tensor`` so every conversion of a floating-point tensor is recorded."""
    seen: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in CONVERSIONS}

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            if self.is_floating_point():
                seen.append(f"{name} of {tuple(self.shape)}")
            return fn(self, *args, **kwargs)

        return counted

    try:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        yield seen
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def _bag(i: int, label: int, n: int = 30) -> Bag:
    g = torch.Generator().manual_seed(i)
    lesion = torch.zeros(n, dtype=torch.int8)
    if label:
        lesion[:5] = 1
    x = torch.randn(n, D, generator=g) + lesion[:, None].float()
    target = lesion.float() / lesion.float().sum().clamp_min(1)
    coords = torch.stack([torch.arange(n) % 6, torch.arange(n) // 6], 1) * 256
    return Bag(f"s{i}", x, label, coords=coords, patch_labels=lesion, attn_target=target)


def _model(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_model(name, D, 1, **{**SMALL.get(name, {}), **kw})


def _setup(objective_name: str, model_name: str = "abmil"):
    model = _model(model_name)
    obj = create_objective(objective_name)
    baseline = _model(model_name, seed=1).state_dict() if obj.needs_baseline else None
    obj.setup(model, TrainContext(task="classification", seed=0, baseline_state=baseline))
    model.train()
    obj.train()
    return model, obj


def test_the_counter_sees_a_loss_read() -> None:
    """The counter catches what the old objectives did: ``float(loss.detach())``."""
    with count_float_reads() as seen:
        float(torch.tensor(1.5).detach())
        torch.tensor([1.0]).item()
        int(torch.tensor([3]))  # integer: not counted
    assert len(seen) == 2


@pytest.mark.parametrize("objective_name", objective_names())
def test_a_training_step_does_not_read_floats(objective_name: str) -> None:
    model, obj = _setup(objective_name)
    for bag in (_bag(0, 1), _bag(1, 0)):  # annotated positive (rank/attn terms) and negative
        with count_float_reads() as seen:
            result = obj(model, bag)
            result.loss.backward()
        assert seen == [], f"{objective_name}: host reads in a step: {seen}"
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("model_name", names())
def test_a_training_step_of_every_model_does_not_read_floats(model_name: str) -> None:
    model = _model(model_name)
    objective = "rank_induction" if model.has_attention else "bag"
    model, obj = _setup(objective, model_name)
    with count_float_reads() as seen:
        result = obj(model, _bag(0, 1))
        result.loss.backward()
    assert seen == [], f"{model_name}: host reads in a step: {seen}"


@pytest.mark.parametrize("objective_name", ["rank_induction", "mhim_v2"])
def test_fit_reads_terms_once_per_epoch(objective_name: str) -> None:
    """Reads during a training epoch do not grow with the number of bags: one per term."""

    def reads(n_bags: int) -> tuple[int, list[dict[str, float]]]:
        model, obj = _setup(objective_name)
        train = [_bag(i, i % 2) for i in range(n_bags)]
        val = [_bag(100, 1), _bag(101, 0)]
        settings = TrainSettings(max_epochs=1, warmup_epochs=1, patience=1, eval_every=5)
        rows: list[dict[str, float]] = []
        with count_float_reads() as seen:  # validation reads are per validation bag (fixed)
            fit(model, obj, train, val, settings, "classification", 0, rows.append)
        return len(seen), rows

    few, rows_few = reads(2)
    many, rows_many = reads(6)
    assert few == many, f"{objective_name}: {few} reads for 2 bags, {many} for 6"
    assert "train_total" in rows_many[0] and isinstance(rows_many[0]["train_total"], float)
