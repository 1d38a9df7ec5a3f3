from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.models.base import MILModel, MILOutput
from histomil.objectives import TrainContext, create_objective, objective_names


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0) -> MILModel:
    torch.manual_seed(seed)
    return create_model("abmil", in_dim=8, n_classes=1, dropout=0.0)


def _bag(label: int, patch_labels: list[int] | None, n: int = 12) -> Bag:
    g = torch.Generator().manual_seed(1)
    pl = None if patch_labels is None else torch.tensor(patch_labels, dtype=torch.int8)
    target = None
    if pl is not None and (pl == 1).any():
        target = (pl == 1).float() / (pl == 1).sum()
    return Bag("s", torch.randn(n, 8, generator=g), label, patch_labels=pl, attn_target=target)


def _setup(name: str, **params):
    obj = create_objective(name, **params)
    obj.setup(_model(), TrainContext(task="classification", n_classes=1))
    return obj


def test_registry_lists_and_rejects():
    assert {"bag", "rank_induction", "attention_induction"} <= set(objective_names())
    with pytest.raises(ValueError, match="valid names"):
        create_objective("nope")
    with pytest.raises(ValueError, match="lamda"):
        create_objective("rank_induction", lamda=1.0)


ANNOTATED = [1, 1, 0, 0, 0, 0, 0, 0, -1, -1, 0, 0]


@pytest.mark.parametrize("name", ["rank_induction", "attention_induction"])
@pytest.mark.parametrize(
    ("label", "patch_labels"),
    [(0, [0] * 12), (1, None), (1, [-1] * 12), (1, [0] * 12)],
    ids=["negative", "no-labels", "unannotated", "no-lesion"],
)
def test_negative_or_unannotated_slides_add_nothing(name, label, patch_labels):
    bag = _bag(label, patch_labels)
    model = _model()
    model.eval()  # no dropout: identical forward passes
    base = _setup("bag")(model, bag)
    out = _setup(name)(model, bag)
    assert out.loss.item() == pytest.approx(base.loss.item())
    assert "rank" not in out.terms and "attn" not in out.terms


@pytest.mark.parametrize(
    ("name", "term"), [("rank_induction", "rank"), ("attention_induction", "attn")]
)
def test_annotated_positive_slides_add_the_term(name, term):
    bag = _bag(1, ANNOTATED)
    model = _model()
    model.eval()
    base = _setup("bag")(model, bag)
    out = _setup(name, weight=2.0)(model, bag)
    assert out.terms[term] > 0
    assert out.loss.item() == pytest.approx(
        base.loss.item() + 2.0 * float(out.terms[term]), rel=1e-5
    )
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_rank_induction_training_raises_lesion_scores():
    bag = _bag(1, ANNOTATED)
    model = _model()
    obj = _setup("rank_induction", weight=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    lesion = torch.tensor(ANNOTATED) == 1
    normal = torch.tensor(ANNOTATED) == 0

    def gap() -> float:
        with torch.no_grad():
            s = model.eval()(bag.features).class_scores(1)[0]
        return float(s[lesion].min() - s[normal].max())

    before = gap()
    for _ in range(30):
        model.train()
        opt.zero_grad()
        obj(model, bag).loss.backward()
        opt.step()
    assert gap() > before and gap() > 0


class _AuxModel(MILModel):
    """One-logit model with a constant auxiliary loss and a CLAM-like ``bag_weight``."""

    def __init__(self, bag_weight: float | None) -> None:
        super().__init__(4, 1)
        self.lin = nn.Linear(4, 1)
        if bag_weight is not None:
            self.bag_weight = bag_weight

    def project(self, x: Tensor) -> Tensor:
        return x

    def aggregate(self, h, mask, coords=None, label=None) -> MILOutput:
        z = h.mean(dim=1)
        aux = torch.tensor(2.0) if label is not None else None
        return MILOutput(logits=self.lin(z), embedding=z, aux_loss=aux)


@pytest.mark.parametrize("bag_weight", [None, 0.7])
def test_bag_objective_adds_aux_loss(bag_weight):
    model = _AuxModel(bag_weight)
    obj = create_objective("bag")
    obj.setup(model, TrainContext())
    bag = Bag("s", torch.randn(5, 4), 1)
    out = obj(model, bag)
    slide = float(out.terms["bag"])  # terms are detached tensors (no per-step sync)
    expected = slide + 2.0 if bag_weight is None else 0.7 * slide + 0.3 * 2.0
    assert out.terms["aux"] == 2.0
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_multiclass_uses_cross_entropy_and_slide_class_branch():
    torch.manual_seed(0)
    model = create_model("abmil", in_dim=8, n_classes=3, dropout=0.0)
    obj = create_objective("rank_induction")
    obj.setup(model, TrainContext(n_classes=3))
    bag = _bag(2, ANNOTATED)
    out = obj(model, bag)
    ce = torch.nn.functional.cross_entropy(out.output.logits, torch.tensor([2]))
    assert out.terms["bag"] == pytest.approx(ce.item(), rel=1e-5)
    assert out.terms["rank"] > 0
