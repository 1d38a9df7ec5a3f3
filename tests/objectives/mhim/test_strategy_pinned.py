"""Pinned MHIM strategy (issue 22): the lifecycle (seeds, momentum, beta_h, recycle network),
the mining step and the loss, each against a value stated by hand or rebuilt from its parts."""

from __future__ import annotations

import math

import pytest
import torch

from histomil.bags.bag import Bag
from histomil.models import create_model
from histomil.objectives.base import TrainContext
from histomil.objectives.mhim import MHIM, MHIMv1
from histomil.objectives.mhim.recycle import GlobalRecycle
from histomil.objectives.mhim.teacher import consistency_loss, flat_parameters

D = 6


def _model(seed: int, n_classes: int = 1, name: str = "abmil"):
    torch.manual_seed(seed)
    if name == "abmil":
        return create_model(name, in_dim=D, n_classes=n_classes, hidden=8, attn_dim=4, dropout=0.0)
    return create_model(name, in_dim=D, n_classes=n_classes)


def _bag(seed: int, n: int = 20, label: int = 1, lesions: tuple[int, ...] = (0, 1, 2)) -> Bag:
    g = torch.Generator().manual_seed(seed)
    pl = torch.zeros(n, dtype=torch.int8)
    pl[list(lesions)] = 1
    return Bag(f"b{seed}", torch.randn(n, D, generator=g), label, patch_labels=pl)


def _setup(obj: MHIM, model=None, seed: int = 3, fold: int = 2, task="classification", nc=1):
    model = model if model is not None else _model(0, nc)
    baseline = _model(9, nc).state_dict()
    obj.setup(
        model,
        TrainContext(fold=fold, task=task, n_classes=nc, seed=seed, baseline_state=baseline),
    )
    return model, baseline


def test_baseline_objective_by_hand():
    bag = {"name": "bag", "params": {}}
    assert MHIM.baseline_objective(None) == bag
    assert MHIM.baseline_objective({}) == bag
    assert MHIM.baseline_objective({"rank": None}) == bag
    assert MHIM.baseline_objective({"rank": "0.5"}) == bag
    assert MHIM.baseline_objective({"rank": {"weight": 0}}) == bag
    assert MHIM.baseline_objective({"rank": {"weight": None, "sigma": 2}}) == bag
    assert MHIM.baseline_objective({"rank": {"weight": -1.0}}) == bag
    rank = {"weight": 0.5, "sigma": 2.0, "margin": 0.3, "max_pos": 5, "max_neg": 7, "x": 1}
    assert MHIM.baseline_objective({"rank": rank}) == {
        "name": "rank_induction",
        "params": {"weight": 0.5, "sigma": 2.0, "margin": 0.3, "max_pos": 5, "max_neg": 7},
    }
    assert MHIM.baseline_objective({"rank": {"weight": "1e-3", "margin": 0.2}}) == {
        "name": "rank_induction",
        "params": {"weight": "1e-3", "margin": 0.2},
    }


def test_defaults_of_v2_and_v1():
    v2, v1 = MHIM(), MHIMv1()
    assert v2.name == "mhim_v2" and v1.name == "mhim_v1" and MHIM.needs_baseline
    assert v2.masking.scoring == "probability" and v2.recycle_cfg.enabled
    assert v1.masking.scoring == "attention" and v1.masking.beta_l == 0.5
    assert v1.masking.large_scale == "random" and not v1.recycle_cfg.enabled
    assert v2.beta_h == 0.01 and v2.momentum == 0.9999 and v2.task == "classification"
    assert v2.initialised == [] and v2.steps_per_epoch is None and v2.teacher is None
    assert v2.epoch_stats() == {}
    # an unseeded objective's generator starts from seed 0
    assert torch.equal(v2.generator.get_state(), torch.Generator().manual_seed(0).get_state())
    v = MHIM(
        masking={"beta_h": 0.2},
        teacher={"momentum": 0.5},
        consistency={"alpha": 0.3},
        rank={"weight": 2.0},
        survival_alpha=0.25,
    )
    assert v.beta_h == 0.2 and v.momentum == 0.5 and v.consistency.alpha == 0.3
    assert v.rank.weight == 2.0 and v.bag.survival_alpha == 0.25


def test_setup_seeds_teacher_and_recycle_network():
    obj = MHIM(recycle={"n_queries": 2, "heads": 2, "momentum": 0.7, "dropout": 0.0})
    obj.beta_h, obj.momentum = 0.3, 0.2  # reset by setup
    model, baseline = _setup(obj, seed=3, fold=2)
    assert obj.task == "classification"
    assert obj.initialised == ["fc.0.weight", "fc.0.bias"]
    want = torch.Generator().manual_seed(3 * 1009 + 2).get_state()
    assert torch.equal(obj.generator.get_state(), want)
    assert obj.beta_h == 0.01 and obj.momentum == 0.9999
    for k, v in obj.teacher.state_dict().items():
        assert torch.equal(v, baseline[k]), k
    assert not obj.teacher.training
    assert all(not p.requires_grad for p in obj.teacher.parameters())
    assert torch.equal(obj._teacher_init, flat_parameters(obj.teacher))
    assert obj.epoch_stats() == {"teacher_drift": 0.0}
    ref = GlobalRecycle(8, 2, 2, 0.7, 0.0, seed=3)
    assert obj.recycle.momentum == 0.7 and obj.recycle.attn.num_heads == 2
    assert torch.equal(obj.recycle.queries, ref.queries)  # (2, 8): the projection's width
    assert obj.recycle.attn.dropout == 0.0


def test_recycle_network_only_when_instances_are_masked():
    for params in (
        {"recycle": {"enabled": False}},
        {"masking": {"beta_l": 0.0}},
        {"masking": {"large_scale": "none"}},
    ):
        obj = MHIM(**params)
        _setup(obj)
        assert obj.recycle is None, params
    obj = MHIM(masking={"large_scale": "low", "beta_l": 0.1}, recycle={"dropout": 0.25})
    _setup(obj)
    assert isinstance(obj.recycle, GlobalRecycle)
    assert obj.recycle.attn.dropout == 0.25 and obj.recycle.out_drop.p == 0.25
    assert obj.recycle.n_queries == 1 and obj.recycle.attn.num_heads == 8
    # a second setup builds the network again (not kept from the first)
    obj.recycle_cfg = MHIM(recycle={"enabled": False}).recycle_cfg
    _setup(obj)
    assert obj.recycle is None


def test_recycle_network_refuses_a_model_that_needs_coordinates():
    model = _model(0)
    model.needs_coords = True
    with pytest.raises(ValueError) as err:
        _setup(MHIM(), model)
    assert str(err.value) == "the recycle network cannot give coordinates to ABMIL"
    _setup(MHIM(recycle={"enabled": False}), model)  # fine without the network


def test_setup_needs_a_baseline_message():
    with pytest.raises(ValueError) as err:
        MHIMv1().setup(_model(0), TrainContext())
    assert str(err.value) == (
        "mhim_v1 needs a trained baseline (context.baseline_state); set objective.baseline: "
        "auto or a run directory"
    )


def test_momentum_settings():
    obj = MHIM(teacher={"momentum": 0.9})
    assert obj.base_momentum() == 0.9
    obj.set_steps_per_epoch(7)
    assert obj.steps_per_epoch == 7 and obj.momentum == 0.9
    hl = MHIM(teacher={"momentum_half_life_epochs": 2.0})
    with pytest.raises(RuntimeError) as err:
        hl.base_momentum()
    assert str(err.value) == (
        "teacher.momentum_half_life_epochs needs the steps per epoch (set_steps_per_epoch is "
        "called by the trainer before training)"
    )
    hl.set_steps_per_epoch(5.0)
    assert hl.steps_per_epoch == 5 and isinstance(hl.steps_per_epoch, int)
    assert hl.momentum == pytest.approx(0.5 ** (1 / 10), rel=1e-12)
    hl.on_epoch_start(0, 10)
    assert hl.momentum == pytest.approx(0.5 ** (1 / 10), rel=1e-12)


def test_on_epoch_start_decay_and_momentum_schedule():
    obj = MHIM(masking={"beta_h": 0.2}, teacher={"momentum": 0.9, "schedule": "cosine"})
    obj.on_epoch_start(1, 4)
    assert obj.beta_h == pytest.approx(0.2 * (1 + math.cos(math.pi / 4)) / 2, rel=1e-12)
    assert obj.momentum == pytest.approx(1 - 0.1 * (1 + math.cos(math.pi / 4)) / 2, rel=1e-12)
    obj.on_epoch_start(2, 4)
    assert obj.beta_h == pytest.approx(0.1, rel=1e-12)
    assert obj.momentum == pytest.approx(0.95, rel=1e-12)
    short = MHIM(masking={"beta_h": 0.2, "decay_epochs": 2})
    short.on_epoch_start(1, 10)
    assert short.beta_h == pytest.approx(0.1, rel=1e-12)
    assert short.momentum == 0.9999  # constant schedule
    short.on_epoch_start(5, 10)
    assert short.beta_h == 0.0
    fixed = MHIM(masking={"beta_h": 0.2, "decay": False})
    fixed.on_epoch_start(3, 4)
    assert fixed.beta_h == 0.2


def test_after_optimizer_step_and_drift():
    obj = MHIM(teacher={"momentum": 0.25})
    model, baseline = _setup(obj)
    obj.momentum = 0.25
    calls = []
    obj.recycle.apply_ema = lambda: calls.append(1) or True
    obj.after_optimizer_step(model)
    assert calls == [1]
    student = dict(model.named_parameters())
    for k, p in obj.teacher.named_parameters():
        want = 0.25 * baseline[k] + 0.75 * student[k].detach()
        assert torch.allclose(p, want, rtol=1e-6, atol=1e-7), k
    ref = flat_parameters(create_model("abmil", in_dim=D, n_classes=1, hidden=8, attn_dim=4))
    init = obj._teacher_init
    want = float((flat_parameters(obj.teacher) - init).norm() / init.norm())
    assert obj.epoch_stats()["teacher_drift"] == pytest.approx(want, rel=1e-6)
    assert want > 0 and ref.shape == init.shape
    # no teacher (before setup): nothing to update
    MHIM().after_optimizer_step(model)


def test_teacher_stays_in_eval_mode():
    obj = MHIM()
    _setup(obj)
    obj.train()
    assert obj.training and not obj.teacher.training and obj.recycle.training
    assert obj.train(False) is obj and not obj.recycle.training
    assert MHIM().train() is not None  # before setup: no teacher


def test_target_class_of_the_scores():
    bag = _bag(0, label=2)
    obj = MHIM()
    assert obj._target(bag) == 2
    assert MHIM(masking={"score_class": "positive"})._target(bag) == 1
    assert MHIM(masking={"score_class": "max"})._target(bag) is None
    obj.task = "survival"
    assert obj._target(bag) is None


def test_mine_before_setup():
    with pytest.raises(RuntimeError) as err:
        MHIM().mine(_bag(0))
    assert str(err.value) == "mhim_v2: setup() was not called"


@pytest.mark.parametrize("option", ["scores", "target", "spare_lesions"])
def test_mine_lesion_fill_and_teacher_outputs(option):
    from histomil.objectives.mhim.masking import mask_instances
    from histomil.objectives.mhim.scoring import instance_scores

    obj = MHIM(masking={"beta_h": 0.2, "beta_l": 0.5, "high_score_masking": option})
    _setup(obj)
    bag = _bag(1, n=20, lesions=(3, 4, 5))
    state = obj.generator.get_state()
    result, emb, scores = obj.mine(bag)
    x = bag.features[None]
    with torch.no_grad():
        h = obj.teacher.project(x)
        out = obj.teacher.aggregate(h, None)
        want = instance_scores(obj.teacher, out, h, 1, "probability").float()
    assert torch.equal(scores, want) and torch.equal(emb, out.embedding)
    adjusted = want.clone()
    if option != "scores":
        adjusted[[3, 4, 5]] = float("inf") if option == "target" else float("-inf")
    g = torch.Generator()
    g.set_state(state)
    ref = mask_instances(adjusted, 0.2, 0.5, g, random_high=True, large_scale="random")
    for name in ("keep", "recycled", "high"):
        assert torch.equal(getattr(result, name), getattr(ref, name)), name
    # a (1, N, D) bag gives the same mining
    obj.generator.set_state(state)
    again, _, _ = obj.mine(Bag("b", x, 1, patch_labels=bag.patch_labels))
    assert torch.equal(again.keep, result.keep)


def test_mine_without_lesions_keeps_the_scores():
    obj = MHIM(masking={"beta_h": 0.2, "high_score_masking": "target", "random_high": False})
    _setup(obj)
    bag = _bag(2, n=20, lesions=())
    result, _, scores = obj.mine(bag)
    top = set(torch.topk(scores, 4).indices.tolist())
    assert set(result.high.tolist()) == top


def _rebuilt_loss(obj, model, bag, state, task="classification"):
    """forward's loss from its parts, with the generator replayed."""
    obj.generator.set_state(state)
    mined, emb_t, _ = obj.mine(bag)
    keep, rec = mined.keep, mined.recycled
    x = bag.features[None]
    use = obj.recycle is not None and rec.numel() > 0
    h = model.project(x[:, torch.cat([keep, rec]) if use else keep])
    tokens = h[:, : keep.numel()]
    if use:
        tokens = torch.cat([tokens, obj.recycle(h[:, keep.numel() :])], dim=1)
    label = torch.tensor([int(bag.label)]) if task == "classification" else None
    out = model.aggregate(tokens, None, None, label)
    slide, _ = obj.bag.bag_loss(model, out, bag)
    con = consistency_loss(out.embedding, emb_t, obj.consistency.tau)
    return slide, con, mined, out


@pytest.mark.parametrize("recycle", [True, False])
def test_forward_loss_from_its_parts(recycle):
    obj = MHIM(
        masking={"beta_h": 0.1, "beta_l": 0.5},
        recycle={"enabled": recycle, "heads": 2},
        consistency={"alpha": 0.7, "tau": 0.5},
    )
    model, _ = _setup(obj)
    model.eval()
    obj.eval()
    bag = _bag(4, n=30)
    state = obj.generator.get_state()
    res = obj(model, bag)
    slide, con, mined, out = _rebuilt_loss(obj, model, bag, state)
    assert float(res.loss) == pytest.approx(float(slide + 0.7 * con), rel=1e-6)
    assert torch.allclose(res.output.logits, out.logits, rtol=1e-6)
    t = res.terms
    assert float(t["bag"]) == pytest.approx(float(slide), rel=1e-6)
    assert float(t["con"]) == pytest.approx(float(con), rel=1e-6)
    assert float(t["total"]) == pytest.approx(float(res.loss), rel=1e-6)
    assert t["n_keep"] == float(mined.keep.numel()) and t["n_high"] == float(mined.high.numel())
    assert t["n_recycled"] == float(mined.recycled.numel())
    assert mined.recycled.numel() > 0 and mined.high.numel() > 0
    assert t["beta_h"] == 0.1 and t["momentum"] == 0.9999 and "rank" not in t
    assert res.output.weights.shape[1] == mined.keep.numel() + (1 if recycle else 0)
    assert not res.loss.detach().requires_grad and res.loss.requires_grad


def test_forward_on_survival_and_multiclass():
    obj = MHIM(masking={"beta_h": 0.1}, rank={"weight": 1.0}, consistency={"alpha": 0.2})
    model, _ = _setup(obj, task="survival", nc=4)
    model.eval()
    obj.eval()
    bag = _bag(5, n=25, label=2)
    bag.event = 1
    state = obj.generator.get_state()
    res = obj(model, bag)
    slide, con, _, _ = _rebuilt_loss(obj, model, bag, state, task="survival")
    assert float(res.loss) == pytest.approx(float(slide + 0.2 * con), rel=1e-6)
    assert "rank" not in res.terms  # rank only for classification
    obj = MHIM(masking={"beta_h": 0.1}, consistency={"alpha": 0.2})
    model, _ = _setup(obj, nc=3)
    model.eval()
    obj.eval()
    state = obj.generator.get_state()
    res = obj(model, bag)
    slide, con, _, out = _rebuilt_loss(obj, model, bag, state)
    assert float(res.loss) == pytest.approx(float(slide + 0.2 * con), rel=1e-6)


def test_rank_term_needs_attention_scores():
    obj = MHIM(masking={"beta_h": 0.1}, rank={"weight": 1.0})
    model, _ = _setup(obj)
    bag = _bag(6, n=20, lesions=(0, 1, 2, 3, 4, 5, 6, 7))
    model.eval()
    obj.eval()
    res = obj(model, bag)
    assert "rank" in res.terms
    from histomil.models.base import MILOutput

    real = model.aggregate

    def no_scores(*a, **k):
        out = real(*a, **k)
        return MILOutput(logits=out.logits, embedding=out.embedding)

    model.aggregate = no_scores
    with pytest.raises(ValueError) as err:
        obj(model, bag)
    assert str(err.value) == "rank induction with MHIM needs a student with attention scores"


def test_predict_with_and_without_recycle_tokens():
    obj = MHIM(recycle={"heads": 2})
    model, _ = _setup(obj)
    model.eval()
    obj.eval()
    bag = _bag(7, n=12)
    with torch.no_grad():
        pred = obj.predict(model, bag)
        h = model.project(bag.features[None])
        full = model.aggregate(torch.cat([h, obj.recycle(h)], dim=1), None)
        plain = model(bag.features)
    assert torch.allclose(pred.logits, full.logits, rtol=1e-6)
    assert not torch.allclose(pred.logits, plain.logits, rtol=1e-4)
    assert torch.equal(pred.weights, full.weights[:, :12])
    assert torch.equal(pred.scores, full.scores[:, :12])
    assert torch.equal(pred.extras["recycle_weights"], full.weights[:, 12:])
    assert torch.equal(pred.embedding, full.embedding)
    assert pred.instance_logits is None and pred.aux_loss is None
    # a (1, N, D) bag gives the same prediction
    with torch.no_grad():
        again = obj.predict(model, Bag("b", bag.features[None], 1))
    assert torch.allclose(again.logits, pred.logits, rtol=1e-6)
    off = MHIM(recycle={"at_inference": False})
    _setup(off, model)
    with torch.no_grad():
        assert torch.equal(off.predict(model, bag).logits, plain.logits)
    none = MHIM(recycle={"enabled": False})
    _setup(none, model)
    with torch.no_grad():
        assert torch.equal(none.predict(model, bag).logits, plain.logits)


def test_predict_cuts_instance_logits_to_the_bag():
    obj = MHIM(recycle={"heads": 1})
    model = create_model("dsmil", in_dim=D, n_classes=1, hidden=8)
    obj.setup(
        model,
        TrainContext(
            baseline_state=create_model("dsmil", in_dim=D, n_classes=1, hidden=8).state_dict()
        ),
    )
    model.eval()
    obj.eval()
    bag = _bag(8, n=10)
    with torch.no_grad():
        pred = obj.predict(model, bag)
        h = model.project(bag.features[None])
        full = model.aggregate(torch.cat([h, obj.recycle(h)], dim=1), None)
    assert torch.equal(pred.instance_logits, full.instance_logits[:, :10])
    assert pred.branch_of_class == full.branch_of_class
    assert pred.extras.keys() == {*full.extras, "recycle_weights"} or pred.weights is None


SMALL = {
    "hipt": {"n_classes": 1, "hidden": 12, "heads": 2, "region_size": 2},
    "clam_mb": {"n_classes": 2, "hidden": 8, "attn_dim": 4, "dropout": 0.0},
}


def _student(obj: MHIM, name: str):
    """``obj`` set up on a small ``name`` student whose baseline is another initialisation."""
    torch.manual_seed(0)
    model = create_model(name, in_dim=D, **SMALL[name])
    base = create_model(name, in_dim=D, **SMALL[name])
    obj.setup(
        model, TrainContext(n_classes=SMALL[name]["n_classes"], baseline_state=base.state_dict())
    )
    return model


def _spy_aggregate(model):
    """Record the (mask, coords, label) that ``model.aggregate`` receives."""
    seen = []
    real = model.aggregate

    def spy(h, mask=None, coords=None, label=None):
        seen.append((h.shape[1], mask, coords, label))
        return real(h, mask, coords, label)

    model.aggregate = spy
    return seen


def test_forward_passes_the_label_and_no_coordinates_to_the_student():
    """The student's aggregate gets the bag label for classification (CLAM's clustering loss and
    DTFD's tier-1 loss need it), none for survival, and no coordinates when it needs none."""
    obj = MHIM(masking={"beta_h": 0.1, "beta_l": 0.5}, recycle={"heads": 2})
    model, _ = _setup(obj)
    bag = _bag(11, n=20, label=1)
    bag.coords = torch.arange(40).reshape(20, 2) * 256
    seen = _spy_aggregate(model)
    obj(model, bag)
    ((n, mask, coords, label),) = seen
    assert mask is None and coords is None and torch.equal(label, torch.tensor([1]))
    survival = MHIM(masking={"beta_h": 0.1})
    model, _ = _setup(survival, task="survival", nc=4)
    seen = _spy_aggregate(model)
    bag.event = 1
    survival(model, bag)
    assert seen[0][3] is None


def test_forward_gives_a_coordinate_model_the_kept_instances_coordinates():
    """Student and teacher of a model with regions (HIPT) get the coordinates: the student those
    of the kept instances, the teacher all (it once got none and HIPT could not be mined)."""
    obj = MHIM(masking={"beta_h": 0.1, "beta_l": 0.5}, recycle={"enabled": False})
    model = _student(obj, "hipt")
    bag = _bag(12, n=16)
    bag.coords = torch.stack([torch.arange(16) % 4, torch.arange(16) // 4], 1) * 256
    state = obj.generator.get_state()
    seen = _spy_aggregate(model)
    obj(model, bag)
    obj.generator.set_state(state)
    mined, _, _ = obj.mine(bag)
    ((n, _, coords, _),) = seen
    assert n == mined.keep.numel() < 16
    assert torch.equal(coords, bag.coords[mined.keep][None])
    moved = Bag("b", bag.features, 1, patch_labels=bag.patch_labels, coords=bag.coords.flip(0))
    assert not torch.equal(obj.mine(moved)[2], obj.mine(bag)[2])  # the teacher used them


def test_recycle_tokens_with_one_and_with_no_recycled_instance():
    """One masked instance is recycled into a token; with none masked no token is appended."""
    obj = MHIM(masking={"beta_h": 0.0, "beta_l": 0.5}, recycle={"heads": 1})
    model, _ = _setup(obj)
    one = obj(model, _bag(13, n=2, lesions=(0,)))
    assert one.terms["n_recycled"] == 1.0 and one.output.weights.shape[1] == 1 + 1
    none = obj(model, _bag(14, n=1, lesions=(0,)))
    assert none.terms["n_recycled"] == 0.0 and none.output.weights.shape[1] == 1
    assert torch.isfinite(none.loss)


def test_forward_on_a_batched_bag_equals_the_plain_bag():
    obj = MHIM(masking={"beta_h": 0.1, "beta_l": 0.5}, recycle={"heads": 2})
    model, _ = _setup(obj)
    model.eval()
    obj.eval()
    bag = _bag(15, n=20)
    state = obj.generator.get_state()
    plain = obj(model, bag)
    obj.generator.set_state(state)
    batched = obj(model, Bag("b", bag.features[None], 1, patch_labels=bag.patch_labels))
    assert torch.equal(plain.output.logits, batched.output.logits)


def test_mining_scores_of_a_negative_bag_and_of_attention_scoring():
    """A negative bag is scored by the probability of its own class (1 - p), and ``attention``
    scoring uses the teacher's attention scores."""
    from histomil.objectives.mhim.scoring import instance_scores

    bag = _bag(16, n=20, label=0, lesions=())
    for scoring in ("probability", "attention"):
        obj = MHIM(masking={"beta_h": 0.1, "scoring": scoring})
        _setup(obj)
        _, _, scores = obj.mine(bag)
        with torch.no_grad():
            h = obj.teacher.project(bag.features[None])
            out = obj.teacher.aggregate(h, None)
            want = instance_scores(obj.teacher, out, h, 0, scoring).float()
            other = instance_scores(obj.teacher, out, h, 1, scoring).float()
        assert torch.equal(scores, want)
        if scoring == "probability":
            assert not torch.allclose(scores, other)


def _step_then_kept_output(obj, model, bag):
    """One training step's terms, then (with the generator replayed) the step's masks and the
    student's output on the kept instances alone."""
    state = obj.generator.get_state()
    terms = obj(model, bag).terms
    obj.generator.set_state(state)
    mined, _, _ = obj.mine(bag)
    with torch.no_grad():
        out = model.aggregate(model.project(bag.features[None][:, mined.keep]), None)
    return terms, mined, out


def test_rank_term_uses_the_caps_and_the_strategy_generator():
    """The MHIM rank term equals rank_loss on the student's scores of the kept instances with
    the configured caps, drawn from the strategy's generator after the masks."""
    from histomil.objectives.rank import rank_loss

    obj = MHIM(
        masking={"beta_h": 0.0, "beta_l": 0.2},
        recycle={"enabled": False},
        rank={"weight": 1.0, "max_pos": 2, "max_neg": 3, "margin": 0.5},
    )
    model, _ = _setup(obj)
    model.eval()
    obj.eval()
    bag = _bag(17, n=30, lesions=tuple(range(10)))
    terms, mined, out = _step_then_kept_output(obj, model, bag)
    got = terms["rank"]
    want = rank_loss(
        out.class_scores(1)[0], bag.patch_labels[mined.keep], 1.0, 0.5, 2, 3, obj.generator
    )
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    uncapped = rank_loss(out.class_scores(1)[0], bag.patch_labels[mined.keep], 1.0, 0.5)
    assert float(got) != pytest.approx(float(uncapped), rel=1e-6)


def test_rank_term_of_a_multi_branch_student_uses_the_label_branch():
    from histomil.objectives.rank import rank_loss

    obj = MHIM(masking={"beta_h": 0.0, "beta_l": 0.2}, recycle={"enabled": False},
               rank={"weight": 1.0, "max_pos": None, "max_neg": None})  # fmt: skip
    model = _student(obj, "clam_mb")
    model.eval()
    obj.eval()
    bag = _bag(18, n=20, label=1, lesions=(0, 1, 2, 3))
    terms, mined, out = _step_then_kept_output(obj, model, bag)
    got = terms["rank"]
    labels = bag.patch_labels[mined.keep]
    want = rank_loss(out.class_scores(1)[0], labels, 1.0, 1.0, None, None)
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert float(got) != pytest.approx(float(rank_loss(out.class_scores(0)[0], labels)), rel=1e-6)


def test_predict_keeps_the_student_branches_and_coordinates():
    """With recycle tokens at inference a multi-branch student keeps its branch map; a model
    without attention scores (mean pooling) predicts; without recycle a coordinate model gets
    the bag's coordinates."""
    obj = MHIM(recycle={"heads": 2})
    model = _student(obj, "clam_mb")
    model.eval()
    obj.eval()
    with torch.no_grad():
        pred = obj.predict(model, _bag(19, n=10, label=1))
    assert pred.branch_of_class == (0, 1)
    mean = create_model("mean", in_dim=D, n_classes=1, hidden=8)
    obj = MHIM(recycle={"heads": 2})
    obj.setup(mean, TrainContext(baseline_state=create_model("mean", D, 1, hidden=8).state_dict()))
    mean.eval()
    with torch.no_grad():
        pred = obj.predict(mean, _bag(20, n=10))
    assert pred.scores is None and pred.weights is None and pred.logits.shape == (1, 1)
    obj = MHIM(recycle={"enabled": False})
    hipt = _student(obj, "hipt")
    hipt.eval()
    bag = _bag(21, n=16)
    bag.coords = torch.stack([torch.arange(16) % 4, torch.arange(16) // 4], 1) * 256
    with torch.no_grad():
        got = obj.predict(hipt, bag)
        want = hipt(bag.features, coords=bag.coords)
        moved = hipt(bag.features, coords=bag.coords.flip(0))
    assert torch.equal(got.logits, want.logits)
    assert not torch.equal(want.logits, moved.logits)  # coordinates matter to this model


def test_class_defaults_of_every_group_and_survival_alpha():
    """A strategy subclass sets defaults per group (as MHIMv1 does for masking and recycle);
    every group reads its own, and survival_alpha defaults to 0."""

    class Custom(MHIM):
        _defaults = {
            "teacher": {"momentum": 0.5},
            "consistency": {"alpha": 0.3},
            "rank": {"weight": 0.2},
            "recycle": {"heads": 2},
            "masking": {"beta_l": 0.4},
        }

    c = Custom()
    assert (c.teacher_cfg.momentum, c.consistency.alpha, c.rank.weight) == (0.5, 0.3, 0.2)
    assert (c.recycle_cfg.heads, c.masking.beta_l) == (2, 0.4)
    assert Custom(teacher={"momentum": 0.7}).teacher_cfg.momentum == 0.7
    assert MHIM().bag.survival_alpha == 0.0
    assert MHIM(survival_alpha=0.4).bag.survival_alpha == 0.4


@pytest.mark.parametrize("large_scale", ["low", "none"])
def test_mine_uses_the_configured_large_scale_masking(large_scale):
    from histomil.objectives.mhim.masking import mask_instances

    obj = MHIM(masking={"beta_h": 0.1, "beta_l": 0.5, "large_scale": large_scale})
    _setup(obj)
    bag = _bag(22, n=20)
    state = obj.generator.get_state()
    result, _, scores = obj.mine(bag)
    g = torch.Generator()
    g.set_state(state)
    ref = mask_instances(scores, 0.1, 0.5, g, random_high=True, large_scale=large_scale)
    assert torch.equal(result.keep, ref.keep) and torch.equal(result.recycled, ref.recycled)


def test_mine_on_a_bag_of_lesions_only():
    """Every patch annotated as lesion: ``target`` masks among them all alike (scores +inf),
    not by the teacher's scores."""
    from histomil.objectives.mhim.masking import mask_instances

    obj = MHIM(masking={"beta_h": 0.2, "beta_l": 0.0, "random_high": False,
                        "high_score_masking": "target"})  # fmt: skip
    _setup(obj)
    bag = _bag(23, n=20, lesions=tuple(range(20)))
    state = obj.generator.get_state()
    result, _, scores = obj.mine(bag)
    g = torch.Generator()
    g.set_state(state)
    ref = mask_instances(torch.full((20,), float("inf")), 0.2, 0.0, g, random_high=False)
    assert torch.equal(result.high, ref.high)
    assert set(result.high.tolist()) != set(torch.topk(scores, 4).indices.tolist())
