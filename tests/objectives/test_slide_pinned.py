"""Pinned slide-level objectives: every term by value, computed by hand on a model whose output is
fixed (so nothing but the objective's arithmetic is under test)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from histomil.bags.bag import Bag
from histomil.models.base import MILOutput
from histomil.objectives import create_objective
from histomil.objectives.base import TrainContext
from histomil.objectives.registry import objective_class, objective_names
from histomil.objectives.slide import AttentionInduction, BagObjective, RankInduction, slide_loss


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _bce(logit: float, y: float) -> float:
    return -(y * math.log(_sig(logit)) + (1 - y) * math.log(1 - _sig(logit)))


class Fixed(nn.Module):
    """A stand-in model returning a fixed output; records the label it was called with."""

    bag_weight: float | None = None  # what MILModel declares

    def __init__(self, output: MILOutput, bag_weight: float | None = None) -> None:
        super().__init__()
        self.output = output
        self.p = nn.Parameter(torch.zeros(()))
        if bag_weight is not None:
            self.bag_weight = bag_weight
        self.labels: list = []

        self.coords: list = []

    def forward(self, features, coords=None, label=None):
        self.labels.append(label)
        self.coords.append(coords)
        return self.output


SCORES = [2.0, -1.0, 0.5, 1.5, -0.5]
WEIGHTS = [0.4, 0.1, 0.2, 0.25, 0.05]


def _output(logits, aux=None, branches=1) -> MILOutput:
    scores = torch.tensor(SCORES)[None, :, None].repeat(1, 1, branches)
    weights = torch.tensor(WEIGHTS)[None, :, None].repeat(1, 1, branches)
    if branches > 1:  # branch b gets scores + b and weights rolled by b
        scores = scores + torch.arange(branches, dtype=torch.float32)
        weights = torch.stack([weights[..., 0].roll(b, 1) for b in range(branches)], -1)
    return MILOutput(
        logits=torch.tensor([logits]),
        embedding=torch.zeros(1, 2),
        scores=scores,
        weights=weights,
        aux_loss=None if aux is None else torch.tensor(aux),
        branch_of_class=tuple(range(branches)) if branches > 1 else (0,),
    )


LABELS = torch.tensor([1, 0, 1, -1, 0], dtype=torch.int8)
TARGET = torch.tensor([0.6, 0.0, 0.4, 0.0, 0.0])


def _bag(label=1, patch_labels=LABELS, attn_target=TARGET, **kw) -> Bag:
    return Bag(
        "s", torch.zeros(5, 3), label, patch_labels=patch_labels, attn_target=attn_target, **kw
    )


def _setup(obj, n_classes=1, task="classification"):
    obj.setup(None, TrainContext(task=task, n_classes=n_classes, seed=0))
    return obj


def test_bag_loss_bce_ce_and_survival_by_hand():
    obj = _setup(BagObjective())
    for y in (0, 1):
        out = obj(Fixed(_output([0.7])), _bag(label=y))
        assert out.terms["bag"] == pytest.approx(_bce(0.7, y))
        assert out.terms["total"] == pytest.approx(_bce(0.7, y))
        assert float(out.loss) == pytest.approx(_bce(0.7, y))
    obj3 = _setup(BagObjective(), n_classes=3)
    logits = [0.2, 1.0, -0.3]
    z = sum(math.exp(v) for v in logits)
    model = Fixed(_output(logits))
    out = obj3(model, _bag(label=2))
    assert out.terms["bag"] == pytest.approx(-math.log(math.exp(-0.3) / z))
    assert model.labels[-1].tolist() == [2]  # the label reaches the model for its own losses
    # survival: bag.label is the time bin; events 1 = observed
    surv = _setup(BagObjective(), n_classes=3, task="survival")
    h = [_sig(v) for v in logits]
    model = Fixed(_output(logits))
    got = surv(model, _bag(label=1, event=1, time=3.0)).terms["bag"]
    assert got == pytest.approx(-math.log((1 - h[0]) * h[1]))
    assert model.labels[-1] is None  # no class label for survival models
    got_c = surv(Fixed(_output(logits)), _bag(label=1, event=0, time=3.0)).terms["bag"]
    assert got_c == pytest.approx(-math.log((1 - h[0]) * (1 - h[1])))
    with pytest.raises(ValueError, match="no event indicator"):
        slide_loss(torch.tensor([logits]), _bag(label=1), "survival")
    with pytest.raises(ValueError, match="unknown task"):
        _setup(BagObjective(), task="regression")


def test_survival_alpha_weights_the_uncensored_part():
    logits = [0.2, 1.0, -0.3]
    h = [_sig(v) for v in logits]
    obj = _setup(BagObjective(survival_alpha=0.25), n_classes=3, task="survival")
    cens = obj(Fixed(_output(logits)), _bag(label=2, event=0, time=1.0)).terms["bag"]
    s2 = (1 - h[0]) * (1 - h[1]) * (1 - h[2])
    assert cens == pytest.approx(0.75 * -math.log(s2))  # censored: no uncensored part
    ev = obj(Fixed(_output(logits)), _bag(label=2, event=1, time=1.0)).terms["bag"]
    assert ev == pytest.approx(-math.log((1 - h[0]) * (1 - h[1]) * h[2]))


def test_model_aux_loss_is_combined_with_bag_weight():
    obj = _setup(BagObjective())
    bag = _bag(label=1)
    bce = _bce(0.7, 1)
    plain = obj(Fixed(_output([0.7], aux=0.9)), bag)
    assert plain.terms["aux"] == pytest.approx(0.9)
    assert plain.terms["total"] == pytest.approx(bce + 0.9)
    weighted = obj(Fixed(_output([0.7], aux=0.9), bag_weight=0.7), bag)
    assert weighted.terms["total"] == pytest.approx(0.7 * bce + 0.3 * 0.9)
    assert float(weighted.loss) == pytest.approx(0.7 * bce + 0.3 * 0.9)
    none = obj(Fixed(_output([0.7]), bag_weight=0.7), bag)  # no aux: bag loss unweighted
    assert "aux" not in none.terms and none.terms["total"] == pytest.approx(bce)


def _brute_rank(scores, labels, sigma, margin):
    pairs = [
        -math.log(_sig(sigma * (scores[i] - scores[j] - margin)))
        for i, a in enumerate(labels)
        for j, b in enumerate(labels)
        if a == 1 and b == 0
    ]
    return sum(pairs) / len(pairs)


def test_rank_induction_term_by_brute_force():
    obj = _setup(RankInduction(sigma=2.0, margin=0.5, weight=3.0, max_pos=None, max_neg=None))
    out = obj(Fixed(_output([0.7])), _bag(label=1))
    want = _brute_rank(SCORES, LABELS.tolist(), 2.0, 0.5)
    assert out.terms["rank"] == pytest.approx(want)
    assert out.terms["total"] == pytest.approx(_bce(0.7, 1) + 3.0 * want)
    # negative slides and slides without a lesion label get no rank term
    assert "rank" not in obj(Fixed(_output([0.7])), _bag(label=0)).terms
    no_lesion = torch.tensor([0, 0, -1, -1, 0], dtype=torch.int8)
    assert "rank" not in obj(Fixed(_output([0.7])), _bag(patch_labels=no_lesion)).terms
    # multi-class: the branch of the slide's own class (scores + class index here)
    obj3 = _setup(RankInduction(max_pos=None, max_neg=None), n_classes=3)
    out3 = obj3(Fixed(_output([0.1, 0.2, 0.3], branches=3)), _bag(label=2))
    shifted = [s + 2.0 for s in SCORES]  # shifts cancel in differences: same value
    assert out3.terms["rank"] == pytest.approx(_brute_rank(shifted, LABELS.tolist(), 1.0, 1.0))
    with pytest.raises(ValueError, match="needs task: classification"):
        _setup(RankInduction(), task="survival")
    no_attn = MILOutput(logits=torch.tensor([[0.7]]), embedding=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="needs attention scores"):
        obj(Fixed(no_attn), _bag())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_attention_induction_term_by_value(reduction):
    """Issue 22 (4): sum = sum_k (a_k - t_k)^2, mean = that / N."""
    sq = [(a - t) ** 2 for a, t in zip(WEIGHTS, TARGET.tolist(), strict=True)]
    want = sum(sq) if reduction == "sum" else sum(sq) / len(sq)
    obj = _setup(AttentionInduction(weight=2.5, reduction=reduction))
    out = obj(Fixed(_output([0.7])), _bag(label=1))
    assert out.terms["attn"] == pytest.approx(want)
    assert out.terms["total"] == pytest.approx(_bce(0.7, 1) + 2.5 * want)
    assert float(out.loss) == pytest.approx(_bce(0.7, 1) + 2.5 * want)


@pytest.mark.parametrize(
    "obj",
    [AttentionInduction(weight=2.0), RankInduction(weight=2.0, max_pos=None, max_neg=None)],
)
def test_induction_keeps_the_model_bag_weight_and_exact_messages(obj):
    """The induced term is added to ``bag_weight * bag + (1 - bag_weight) * aux``."""
    _setup(obj)
    out = obj(Fixed(_output([0.7], aux=0.9), bag_weight=0.7), _bag(label=1))
    extra = out.terms.get("attn", out.terms.get("rank"))
    assert out.terms["total"] == pytest.approx(0.7 * _bce(0.7, 1) + 0.3 * 0.9 + 2.0 * extra)
    name = obj.name
    no_attn = MILOutput(logits=torch.tensor([[0.7]]), embedding=torch.zeros(1, 2))
    what = "attention" if name == "attention_induction" else "attention scores"
    with pytest.raises(ValueError, match=f"^{name} needs {what}; Fixed$"):
        obj(Fixed(no_attn), _bag())
    with pytest.raises(ValueError, match=f"^{name} needs task: classification$"):
        obj.setup(None, TrainContext(task="survival"))


def test_supervised_branch_and_returned_output():
    """One logit: the positive class's branch (1); C >= 2: the slide's own class's branch."""
    two = _output([0.7], branches=2)  # weights of branch b rolled by b
    obj = _setup(AttentionInduction())
    model = Fixed(two)
    out = obj(model, _bag(label=1))
    assert out.output is model.output
    rolled = WEIGHTS[-1:] + WEIGHTS[:-1]
    want = sum((a - t) ** 2 for a, t in zip(rolled, TARGET.tolist(), strict=True))
    assert out.terms["attn"] == pytest.approx(want)
    obj3 = _setup(AttentionInduction(), n_classes=3)
    out3 = obj3(Fixed(_output([0.1, 0.2, 0.3], branches=3)), _bag(label=2))
    rolled2 = WEIGHTS[-2:] + WEIGHTS[:-2]
    want2 = sum((a - t) ** 2 for a, t in zip(rolled2, TARGET.tolist(), strict=True))
    assert out3.terms["attn"] == pytest.approx(want2)
    assert _setup(BagObjective())(model, _bag()).output is model.output


def test_attention_induction_default_and_when_it_applies():
    assert AttentionInduction().reduction == "sum"
    assert (AttentionInduction().weight, AttentionInduction().survival_alpha) == (1.0, 0.0)
    obj = _setup(AttentionInduction())
    assert "attn" not in obj(Fixed(_output([0.7])), _bag(label=0)).terms
    assert "attn" not in obj(Fixed(_output([0.7])), _bag(attn_target=None)).terms
    assert "attn" not in obj(Fixed(_output([0.7])), _bag(patch_labels=None)).terms
    # multi-class: the branch of the slide's class (weights rolled by the class index)
    obj3 = _setup(AttentionInduction(), n_classes=3)
    out3 = obj3(Fixed(_output([0.1, 0.2, 0.3], branches=3)), _bag(label=1))
    rolled = WEIGHTS[-1:] + WEIGHTS[:-1]
    want = sum((a - t) ** 2 for a, t in zip(rolled, TARGET.tolist(), strict=True))
    assert out3.terms["attn"] == pytest.approx(want)
    with pytest.raises(ValueError, match="reduction must be sum or mean"):
        AttentionInduction(reduction="max")
    with pytest.raises(ValueError, match="needs task: classification"):
        _setup(AttentionInduction(), task="survival")
    no_attn = MILOutput(logits=torch.tensor([[0.7]]), embedding=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="needs attention"):
        obj(Fixed(no_attn), _bag())


def test_registry_names_and_parameter_errors():
    assert objective_names() == [
        "attention_induction",
        "bag",
        "mhim_v1",
        "mhim_v2",
        "rank_induction",
    ]
    assert objective_class("Rank-Induction") is RankInduction
    obj = create_objective("attention_induction", weight=0.5, reduction="mean")
    assert (obj.weight, obj.reduction) == (0.5, "mean")
    with pytest.raises(ValueError, match="unknown objective 'nope'; valid names: attention"):
        create_objective("nope")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) for objective 'bag': sigma"):
        create_objective("bag", sigma=1.0)


def test_defaults_before_setup_and_what_setup_keeps():
    """A fresh objective is binary classification with one logit; setup keeps the task and the
    class count (target_class: branch 1 for one logit, the slide's class otherwise)."""
    obj = BagObjective()
    assert (obj.task, obj.n_classes, obj.survival_alpha) == ("classification", 1, 0.0)
    assert obj.target_class(_bag(label=0)) == 1  # one logit: always the positive branch
    _setup(obj, n_classes=2)
    assert (obj.task, obj.n_classes) == ("classification", 2)
    assert [obj.target_class(_bag(label=y)) for y in (0, 1)] == [0, 1]
    _setup(obj, n_classes=3, task="survival")
    assert (obj.task, obj.n_classes) == ("survival", 3)
    with pytest.raises(ValueError) as err:
        _setup(BagObjective(), task="regression")
    assert str(err.value) == "unknown task 'regression'; valid: classification, survival"


def test_slide_loss_default_survival_alpha_is_zero():
    logits = torch.tensor([[0.2, 1.0, -0.3]])
    bag = _bag(label=1, event=0, time=3.0)
    assert float(slide_loss(logits, bag, "survival")) == pytest.approx(
        float(slide_loss(logits, bag, "survival", survival_alpha=0.0))
    )
    assert float(slide_loss(logits, bag, "survival")) != pytest.approx(
        float(slide_loss(logits, bag, "survival", survival_alpha=1.0))
    )


def test_the_model_gets_the_bag_coordinates():
    coords = torch.arange(10).reshape(5, 2)
    model = Fixed(_output([0.7]))
    _setup(BagObjective())(model, _bag(coords=coords))
    assert model.coords[-1] is coords  # TransMIL/HIPT place instances by them


def test_rank_induction_defaults_and_flags():
    obj = RankInduction()
    assert obj.weight == 1.0 and obj.survival_alpha == 0.0
    assert obj.rank_params == {
        "sigma": 1.0,
        "margin": 1.0,
        "max_pos": 1024,
        "max_neg": 1024,
        "drop_margin": False,
        "include_equal_pairs": False,
    }
    flags = RankInduction(drop_margin=True, include_equal_pairs=True).rank_params
    assert flags["drop_margin"] is True and flags["include_equal_pairs"] is True


def _subsampled_rank(obj, seed_between: int) -> float:
    torch.manual_seed(seed_between)  # the global RNG must not matter
    out = obj(Fixed(_output([0.7])), _bag(label=1))
    return float(out.terms["rank"])


def test_rank_induction_subsamples_with_its_own_seeded_generator():
    """max_pos / max_neg below the counts: the pairs are drawn with the objective's generator,
    seeded from the fold seed at setup (seed 0 before setup), never from the global RNG."""
    from histomil.objectives.rank import rank_loss

    def want(seed: int) -> list[float]:
        gen = torch.Generator().manual_seed(seed)
        return [
            float(rank_loss(torch.tensor(SCORES), LABELS, generator=gen, max_pos=1, max_neg=1))
            for _ in range(6)
        ]

    fresh = RankInduction(max_pos=1, max_neg=1)
    assert [_subsampled_rank(fresh, k) for k in range(6)] == pytest.approx(want(0))
    seeded = RankInduction(max_pos=1, max_neg=1)
    seeded.setup(None, TrainContext(task="classification", n_classes=1, seed=7))
    got = [_subsampled_rank(seeded, k) for k in range(6)]
    assert got == pytest.approx(want(7))
    assert want(7) != pytest.approx(want(0))  # the seeds draw different pairs here
