"""The recycle network through the real trainer: trained by gradient (attention) and by EMA
(queries), restored with the best epoch, and reproducible from the checkpointed objective state."""

from __future__ import annotations

import copy

import torch

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.objectives import TrainContext
from histomil.objectives.mhim import MHIM
from histomil.training.config import TrainSettings
from histomil.training.trainer import fit, predict, seed_everything

D = 6


def _bags(n: int, seed: int) -> list[Bag]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        label = i % 2
        x = torch.randn(30, D, generator=g)
        if label:
            x[:4, 0] += 3.0
        out.append(Bag(f"b{seed}_{i}", x, label))
    return out


def _student(seed: int):
    torch.manual_seed(seed)
    return create_model("abmil", in_dim=D, n_classes=1, hidden=16, attn_dim=8)


def _setup(seed: int = 0):
    baseline = _student(99).state_dict()
    model = _student(seed)
    obj = MHIM(masking={"beta_h": 0.05}, recycle={"momentum": 0.9})
    obj.setup(model, TrainContext(seed=seed, baseline_state=baseline))
    return model, obj, baseline


def test_recycle_state_is_trained_restored_with_the_best_epoch_and_checkpointed() -> None:
    seed_everything(0)
    model, obj, baseline = _setup()
    assert obj.recycle is not None
    start = copy.deepcopy(obj.recycle.state_dict())
    per_epoch: dict[int, dict] = {}

    def record(row: dict) -> None:
        per_epoch[int(row["epoch"])] = copy.deepcopy(obj.recycle.state_dict())

    settings = TrainSettings(max_epochs=12, warmup_epochs=2, patience=3, lr=5e-2)
    val = _bags(6, 9)
    result = fit(model, obj, _bags(8, 1), val, settings, "classification", 0, record)
    last = max(per_epoch)
    assert result.best_epoch < last  # otherwise the restore below would prove nothing
    best = per_epoch[result.best_epoch]
    now = obj.recycle.state_dict()
    # the objective (recycle network included) is back at the best epoch, not the last one
    assert all(torch.equal(now[k], best[k]) for k in best)
    assert any(not torch.equal(per_epoch[last][k], best[k]) for k in best)
    # attention trained by gradient, queries moved by EMA
    assert not torch.equal(now["attn.in_proj_weight"], start["attn.in_proj_weight"])
    assert not torch.equal(now["queries"], start["queries"])
    # the checkpointed objective state holds the recycle network and reproduces the predictions
    saved = result.objective_state
    assert {"recycle.queries", "recycle.attn.in_proj_weight", "recycle.norm.weight"} <= set(saved)
    expected = [p.logits for p in predict(model, obj, val, "classification")]
    model2, obj2 = _student(5), MHIM(masking={"beta_h": 0.05}, recycle={"momentum": 0.9})
    obj2.setup(model2, TrainContext(seed=0, baseline_state=baseline))
    model2.load_state_dict(result.state)
    fresh = [p.logits for p in predict(model2, obj2, val, "classification")]
    assert any(
        not torch.allclose(torch.from_numpy(a), torch.from_numpy(b))
        for a, b in zip(fresh, expected, strict=True)
    )  # without the objective state the recycle tokens differ
    obj2.load_state_dict(saved)
    again = [p.logits for p in predict(model2, obj2, val, "classification")]
    assert all(
        torch.equal(torch.from_numpy(a), torch.from_numpy(b))
        for a, b in zip(again, expected, strict=True)
    )


def test_recycle_tokens_come_from_the_randomly_masked_instances_only() -> None:
    torch.manual_seed(0)
    baseline = create_model("abmil", in_dim=D, n_classes=1, hidden=16, attn_dim=8, dropout=0.0)
    model = create_model("abmil", in_dim=D, n_classes=1, hidden=16, attn_dim=8, dropout=0.0)
    obj = MHIM(masking={"beta_h": 0.1, "beta_l": 0.5}, recycle={"n_queries": 2})
    obj.setup(model, TrainContext(seed=0, baseline_state=baseline.state_dict()))
    bag = _bags(2, 3)[1]
    seen: dict[str, torch.Tensor] = {}
    rec_forward, agg = obj.recycle.forward, model.aggregate

    def recycle_spy(h: torch.Tensor) -> torch.Tensor:
        seen["rec_in"] = h
        return rec_forward(h)

    def aggregate_spy(h: torch.Tensor, *args, **kwargs):
        seen["agg_in"] = h
        return agg(h, *args, **kwargs)

    obj.recycle.forward = recycle_spy
    model.aggregate = aggregate_spy
    state = obj.generator.get_state()
    mined, _, _ = obj.mine(bag)
    obj.generator.set_state(state)
    obj(model, bag)
    x = bag.features[None]
    n_keep, n_rec = mined.keep.numel(), mined.recycled.numel()
    assert n_rec > 0 and mined.high.numel() > 0
    assert torch.equal(seen["rec_in"], model.project(x[:, mined.recycled]))
    assert seen["agg_in"].shape[1] == n_keep + 2  # kept instances + K = 2 recycled tokens
    assert torch.equal(seen["agg_in"][:, :n_keep], model.project(x[:, mined.keep]))
