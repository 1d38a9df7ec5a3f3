"""MHIM-v2/v1 run a few optimizer steps with AB-MIL, TransMIL and DS-MIL students."""

from __future__ import annotations

import pytest
import torch

from histomil.bags.bag import Bag
from histomil.models import create_model, names
from histomil.objectives.base import TrainContext
from histomil.objectives.mhim import MHIM, MHIMv1

D = 12
SMALL = {
    "abmil": {"hidden": 16, "attn_dim": 8},
    "transmil": {"hidden": 16, "heads": 8, "landmarks": 4},
    "dsmil": {"hidden": 16},
}
STUDENTS = [m for m in SMALL if m in names()]


def _bag(i: int, n: int = 40, label: int = 1, lesions: bool = True) -> Bag:
    g = torch.Generator().manual_seed(i)
    labels = torch.zeros(n, dtype=torch.int8)
    if lesions and label:
        labels[:5] = 1
    x = torch.randn(n, D, generator=g) + labels[:, None].float()
    return Bag(f"s{i}", x, label, patch_labels=labels if lesions else None)


def _model(name: str, seed: int, n_classes: int = 1):
    torch.manual_seed(seed)
    return create_model(name, in_dim=D, n_classes=n_classes, **SMALL[name])


def _train(obj, model, bags, task="classification", n_classes=1, epochs=2):
    baseline = _model(type_name(model), 99, n_classes).state_dict()
    obj.setup(model, TrainContext(task=task, n_classes=n_classes, seed=1, baseline_state=baseline))
    params = [p for p in model.parameters()] + [p for p in obj.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    logs = []
    for epoch in range(epochs):
        obj.on_epoch_start(epoch, epochs)
        model.train()
        obj.train()
        for bag in bags:
            out = obj(model, bag)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            obj.after_optimizer_step(model)
            logs.append(out.terms)
    return logs, baseline


def type_name(model) -> str:
    return {"ABMIL": "abmil", "TransMIL": "transmil", "DSMIL": "dsmil"}[type(model).__name__]


@pytest.mark.parametrize("student", STUDENTS)
def test_mhim_v2_trains_and_keeps_the_teacher_frozen(student: str) -> None:
    model = _model(student, 0)
    obj = MHIM(masking={"beta_h": 0.05}, rank={"weight": 1.0})
    bags = [_bag(0), _bag(1, label=0), _bag(2, n=33)]
    logs, baseline = _train(obj, model, bags)
    assert all(torch.isfinite(torch.tensor(t["total"])) for t in logs)
    assert {"bag", "con", "rank", "beta_h", "n_keep", "n_recycled"} <= set(logs[0])
    assert logs[0]["n_high"] == 2 and logs[0]["n_recycled"] == 31 and logs[0]["n_keep"] == 7
    assert logs[-1]["beta_h"] == pytest.approx(0.025)  # cosine decay at epoch 1 of 2
    assert all(not p.requires_grad for p in obj.teacher.parameters())
    assert all(p.grad is None for p in obj.teacher.parameters())
    # the teacher moved from the baseline only by EMA (tiny steps at m = 0.9999)
    diff = max((p - baseline[k]).abs().max() for k, p in obj.teacher.named_parameters())
    assert 0 < float(diff) < 1e-2
    model.eval()
    obj.eval()
    with torch.no_grad():
        pred = obj.predict(model, bags[0])
    assert pred.logits.shape == (1, 1)
    assert pred.scores is None or pred.scores.shape[1] == bags[0].n_instances


def test_student_projection_starts_from_the_baseline() -> None:
    model = _model("abmil", 0)
    obj = MHIM()
    baseline = _model("abmil", 99).state_dict()
    obj.setup(model, TrainContext(seed=0, baseline_state=baseline))
    assert obj.initialised == ["fc.0.weight", "fc.0.bias"]
    assert torch.equal(model.fc[0].weight, baseline["fc.0.weight"])
    assert not torch.equal(model.classifier.weight, baseline["classifier.weight"])


def test_mhim_v1_multiclass_and_survival() -> None:
    model = _model("abmil", 0, n_classes=3)
    obj = MHIMv1(masking={"large_scale": "low"})
    assert obj.recycle_cfg.enabled is False and obj.masking.scoring == "attention"
    logs, _ = _train(obj, model, [_bag(0, label=2, lesions=False), _bag(1, label=0)], n_classes=3)
    assert "n_recycled" in logs[0] and obj.recycle is None
    surv = [_bag(3, label=1, lesions=False), _bag(4, label=3, lesions=False)]
    surv[0].event, surv[1].event = 1, 0
    model = _model("abmil", 0, n_classes=4)
    logs, _ = _train(MHIM(), model, surv, task="survival", n_classes=4, epochs=1)
    assert all(torch.isfinite(torch.tensor(t["total"])) for t in logs)


def test_lesion_options_target_and_spare() -> None:
    model = _model("abmil", 0)
    bag = _bag(0, n=100)  # lesions are instances 0-4
    for option, expect_all in (("target", True), ("spare_lesions", False)):
        obj = MHIM(masking={"beta_h": 0.05, "random_high": False, "high_score_masking": option})
        obj.setup(model, TrainContext(seed=0, baseline_state=_model("abmil", 9).state_dict()))
        result, _, _ = obj.mine(bag)
        masked = set(result.high.tolist())
        assert (masked == set(range(5))) is expect_all
        assert masked.isdisjoint(range(5)) is (not expect_all)


def test_unknown_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown MaskingConfig"):
        MHIM(masking={"beta_hh": 0.1})
    with pytest.raises(ValueError, match="needs a trained baseline"):
        MHIM().setup(_model("abmil", 0), TrainContext())


def test_no_recycle_network_without_large_scale_masking() -> None:
    obj = MHIM(masking={"large_scale": "none"})
    obj.setup(_model("abmil", 0), TrainContext(baseline_state=_model("abmil", 9).state_dict()))
    assert obj.recycle is None
