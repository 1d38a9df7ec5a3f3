"""Pinned MHIM computations: the teacher's instance scores (hand-computed probabilities) and the
rank term on the kept instances only (brute force over the pairs, recycle tokens excluded)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.models.base import MILModel, MILOutput
from histomil.objectives.base import TrainContext
from histomil.objectives.mhim import MHIM
from histomil.objectives.mhim.scoring import class_probability, instance_scores


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_class_probability_one_logit_by_hand():
    logits = torch.tensor([[0.0], [2.0], [-1.5]])  # (3, 1)
    p1 = [0.5, _sig(2.0), _sig(-1.5)]
    torch.testing.assert_close(class_probability(logits, 1), torch.tensor(p1))
    torch.testing.assert_close(class_probability(logits, 0), torch.tensor([1 - p for p in p1]))
    best = [max(p, 1 - p) for p in p1]
    torch.testing.assert_close(class_probability(logits, None), torch.tensor(best))


def test_class_probability_softmax_by_hand():
    row = [1.0, -0.5, 0.25]
    z = sum(math.exp(v) for v in row)
    p = [math.exp(v) / z for v in row]
    logits = torch.tensor([row, [0.0, 0.0, 3.0]])  # (2, 3)
    q = [1 / (2 + math.exp(3)), 1 / (2 + math.exp(3)), math.exp(3) / (2 + math.exp(3))]
    for c in range(3):
        torch.testing.assert_close(class_probability(logits, c), torch.tensor([p[c], q[c]]))
    torch.testing.assert_close(class_probability(logits, None), torch.tensor([p[0], q[2]]))
    # leading batch dimensions are kept: the last dimension holds the classes
    for lg in (logits, torch.tensor([[0.0], [2.0], [-1.5]])):
        for target in (None, 0, 1):
            batched = class_probability(lg[None], target)
            torch.testing.assert_close(batched, class_probability(lg, target)[None])


def _out(**kw) -> MILOutput:
    return MILOutput(logits=torch.zeros(1, 1), embedding=torch.zeros(1, 2), **kw)


class _Head(MILModel):
    """A teacher whose bag classifier is a fixed Linear(2, 1)."""

    def __init__(self) -> None:
        super().__init__(in_dim=2, n_classes=1)
        self.classifier = nn.Linear(2, 1)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[1.0, -2.0]]))
            self.classifier.bias.fill_(0.5)


def test_instance_scores_from_the_bag_head_on_weighted_embeddings():
    teacher = _Head()
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]])  # (1, N=3, 2)
    w = torch.tensor([[[0.5], [0.25], [0.25], [0.9]]])  # (1, N + 1 recycle token, 1)
    out = _out(weights=w)
    # logit_i = 0.5 + a_i * (z_i0 - 2 z_i1)
    logits = [0.5 + 0.5 * 1.0, 0.5 + 0.25 * -2.0, 0.5 + 0.25 * (2.0 - 4.0)]
    got = instance_scores(teacher, out, h, target=1)
    torch.testing.assert_close(got, torch.tensor([_sig(v) for v in logits]))
    got0 = instance_scores(teacher, out, h, target=0)
    torch.testing.assert_close(got0, torch.tensor([1 - _sig(v) for v in logits]))
    # model embeddings replace the projected features when the model provides them
    z = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]])
    out_z = _out(weights=w, extras={"instance_embeddings": z})
    logits_z = [0.5 + 0.5 * -2.0, 0.5 + 0.25 * 1.0, 0.5]
    got_z = instance_scores(teacher, out_z, h, target=1)
    torch.testing.assert_close(got_z, torch.tensor([_sig(v) for v in logits_z]))


def test_instance_scores_prefer_instance_logits_and_branches():
    teacher = _Head()
    h = torch.zeros(1, 2, 2)
    inst = torch.tensor([[[1.0], [-1.0], [5.0]]])  # third = appended token, cut
    got = instance_scores(teacher, _out(instance_logits=inst), h, target=0)
    torch.testing.assert_close(got, torch.tensor([1 - _sig(1.0), 1 - _sig(-1.0)]))
    scores = torch.tensor([[[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]])  # (1, 3, R=2)
    out = _out(scores=scores, branch_of_class=(0, 1))
    att = instance_scores(teacher, out, h, target=None, scoring="attention")
    torch.testing.assert_close(att, torch.tensor([10.0, 20.0]))  # None -> branch of class 1
    att0 = instance_scores(teacher, out, h, target=0, scoring="attention")
    torch.testing.assert_close(att0, torch.tensor([1.0, 2.0]))
    # two-branch weights: the branch of the target class is used
    w = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    p0 = instance_scores(teacher, _out(weights=w, branch_of_class=(0, 1)), torch.ones(1, 2, 2), 0)
    torch.testing.assert_close(p0, torch.tensor([1 - _sig(0.5), 1 - _sig(-0.5)]))


class _Own(_Head):
    """A teacher with its own per-instance class logits (as TransMIL and DS-MIL): recorded
    calls, fixed logits for N = 2 instances plus one appended token."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def class_aware_logits(self, h, out=None):
        self.calls.append((h, out))
        return torch.tensor([[[2.0], [-0.5], [9.0]]])


def test_instance_scores_use_the_models_own_class_aware_logits_first():
    teacher = _Own()
    h = torch.zeros(1, 2, 2)
    out = _out(instance_logits=torch.tensor([[[7.0], [7.0], [7.0]]]))  # not used
    got = instance_scores(teacher, out, h, target=1)
    torch.testing.assert_close(got, torch.tensor([_sig(2.0), _sig(-0.5)]))  # token cut
    ((h_seen, out_seen),) = teacher.calls
    assert h_seen is h and out_seen is out  # the teacher's pass is reused, not recomputed
    got0 = instance_scores(teacher, out, h, target=0)
    torch.testing.assert_close(got0, torch.tensor([1 - _sig(2.0), 1 - _sig(-0.5)]))
    best = instance_scores(teacher, out, h, target=None)
    torch.testing.assert_close(best, torch.tensor([_sig(2.0), 1 - _sig(-0.5)]))


def test_instance_score_errors_and_bag_head():
    teacher = _Head()
    h = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match=r"^scoring must be one of \('probability', 'attention'\)"):
        instance_scores(teacher, _out(), h, 1, scoring="rank")
    with pytest.raises(ValueError, match="^_Head has no attention scores$"):
        instance_scores(teacher, _out(), h, 1, scoring="attention")
    with pytest.raises(ValueError, match="^_Head has no attention weights to score with$"):
        instance_scores(teacher, _out(), h, 1)
    z = torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(teacher.classify(z), teacher.classifier(z))

    class WithClassify(_Head):
        def classify(self, z):
            return z.sum(-1, keepdim=True)

    w = torch.tensor([[[1.0], [1.0]]])
    h2 = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]])
    got = instance_scores(WithClassify(), _out(weights=w), h2, 1)  # the override is used
    torch.testing.assert_close(got, torch.tensor([_sig(3.0), _sig(-1.0)]))

    class NoHead(MILModel):
        pass

    with pytest.raises(ValueError) as err:
        instance_scores(NoHead(2, 1), _out(weights=w), h2, 1)
    assert str(err.value) == (
        "NoHead has no bag classifier (MILModel.classify); use scoring='attention' or give the "
        "model a bag classifier"
    )


def _brute_rank(scores: list[float], labels: list[int], sigma: float, margin: float) -> float:
    terms = [
        -math.log(_sig(sigma * (scores[i] - scores[j] - margin)))
        for i in range(len(labels))
        for j in range(len(labels))
        if labels[i] == 1 and labels[j] == 0
    ]
    return sum(terms) / len(terms)


def test_mhim_rank_term_uses_the_kept_instances_not_the_recycle_tokens():
    """Issue 22 (6): with K = 3 recycle tokens appended, the rank loss pairs the student's scores
    of the kept instances (the first n_keep) with their lesion labels."""
    torch.manual_seed(0)
    model = create_model("abmil", in_dim=6, n_classes=1, hidden=8, attn_dim=4, dropout=0.0)
    baseline = create_model("abmil", in_dim=6, n_classes=1, hidden=8, attn_dim=4).state_dict()
    obj = MHIM(
        masking={"beta_h": 0.1, "beta_l": 0.5},
        recycle={"n_queries": 3, "heads": 1},
        rank={"weight": 2.0, "sigma": 1.5, "margin": 0.5, "max_pos": None, "max_neg": None},
    )
    obj.setup(model, TrainContext(seed=3, baseline_state=baseline))
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([1, 0, 1, -1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0], dtype=torch.int8)
    bag = Bag("s", torch.randn(16, 6, generator=g), 1, patch_labels=labels)
    state = obj.generator.get_state()
    mined, _, _ = obj.mine(bag)
    obj.generator.set_state(state)
    model.eval()
    obj.eval()
    res = obj(model, bag)
    keep = mined.keep
    n_keep = keep.numel()
    assert res.terms["n_keep"] == n_keep and 0 < n_keep < 16
    scores = res.output.class_scores(1)[0]
    assert scores.shape == (n_keep + 3,)  # the recycle tokens are in the student's output
    kept_labels = labels[keep].tolist()
    assert 1 in kept_labels and 0 in kept_labels
    want = _brute_rank(scores[:n_keep].tolist(), kept_labels, 1.5, 0.5)
    wrong = _brute_rank(scores[-n_keep:].tolist(), kept_labels, 1.5, 0.5)
    assert abs(want - wrong) > 1e-3  # the test can tell the two apart
    assert res.terms["rank"] == pytest.approx(want, rel=1e-5)
    # and it enters the total with its weight: total = bag + alpha * con + weight * rank
    t = {k: float(v) for k, v in res.terms.items()}  # detached tensors (no per-step sync)
    assert t["total"] == pytest.approx(t["bag"] + 0.1 * t["con"] + 2.0 * want, rel=1e-5)
    # no rank term on a negative slide or without lesion labels
    neg = obj(model, Bag("n", bag.features, 0, patch_labels=torch.zeros(16, dtype=torch.int8)))
    assert "rank" not in neg.terms
    unl = obj(model, Bag("u", bag.features, 1))
    assert "rank" not in unl.terms
