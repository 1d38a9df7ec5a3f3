"""One model, one split: the training loop with early stopping, and frozen-model prediction.

:func:`fit` only ever receives training and validation bags: model selection (early stopping on
the validation loss, best checkpoint) cannot see test slides. :func:`predict` runs a frozen model
(eval mode, no gradients) and is what the fold pipeline calls on test slides *after* the model
and the decision threshold are fixed.

Validation loss = mean slide-level loss (BCE / CE / survival NLL, without auxiliary or
annotation terms) of ``objective.predict`` on the full validation bags: the same quantity for
every objective, so runs with different objectives select models by the same criterion.
Early stopping: the best epoch is tracked from epoch ``select_from_epoch`` (default 0: from the
first epoch); training stops once ``epoch + 1 >= warmup_epochs`` and the validation loss has not
improved for ``patience`` epochs. The best state is restored at the end.

History rows (one per epoch): mean training terms (``train_*``), the learning rate at the end of
the epoch (``lr``, see :mod:`~histomil.training.schedule`), ``attn_fallback`` (with attention
thresholding: the number of training bags whose thresholded weights were all suppressed, so the
plain softmax was used), the objective's ``epoch_stats`` (MHIM: ``teacher_drift``), and
``val_loss`` / ``val_auroc``.

No per-step host synchronisation: objectives return their loss terms as detached tensors, the
loop sums them on the device and converts them to floats once, when the epoch's row is written
(``tests/training/test_host_sync.py`` counts tensor-to-Python reads during a step).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from histomil.bags.bag import Bag
from histomil.bags.stream import materialize, prefetch
from histomil.models.base import MILModel
from histomil.objectives.base import Objective
from histomil.objectives.slide import slide_loss
from histomil.objectives.survival import risk_score
from histomil.training.config import TrainSettings
from histomil.training.schedule import build_scheduler, steps_per_epoch

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """No epoch could be selected: every validation loss was NaN or infinite."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - libraries may use the global RNG
    torch.manual_seed(seed)


@dataclass
class Prediction:
    """Frozen-model outputs for one bag (numpy, CPU)."""

    slide_id: str
    logits: np.ndarray  # (C,)
    loss: float
    scores: np.ndarray | None = None  # (N,) raw attention of the positive-class branch
    weights: np.ndarray | None = None  # (N,) pooling weights of that branch
    instance_prob: np.ndarray | None = None  # (N,)


@dataclass
class FitResult:
    state: dict[str, Any]
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    # The objective's own state at the best epoch (MHIM: teacher, recycle network queries), so
    # validation, test and a reloaded checkpoint all use the state that went with the model.
    objective_state: dict[str, Any] = field(default_factory=dict)


def _to(bag: Bag, device: torch.device) -> Bag:
    """The bag on ``device`` with float32 features (streamed bags are read first)."""
    bag = materialize(bag)
    moved = {
        k: getattr(bag, k).to(device)
        for k in ("coords", "patch_labels", "overlap", "attn_target")
        if getattr(bag, k) is not None
    }
    moved["features"] = bag.features.to(device, torch.float32)  # one copy, float16 or not
    return replace(bag, **moved)


def _adam(params: list[torch.nn.Parameter], lr: float, weight_decay: float):
    """Adam, fused (one kernel per parameter instead of ~10) where torch supports it."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, unsupported device or dtype
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The training step's precision context: float32 as is, or bfloat16 autocast.

    Under autocast, matrix multiplies (linear layers, attention pooling) run in bfloat16 with
    float32 accumulation and losses, softmax and reductions in float32; the weights, Adam's state
    and the weight gradients stay float32. Only the training forward pass uses it: validation,
    test predictions and attention maps are always computed in float32.
    """
    if precision == "float32":
        return contextlib.nullcontext()
    if precision == "bfloat16":
        from histomil.hardware import warn_if_emulated_bf16

        warn_if_emulated_bf16(device)  # once per process: emulated bf16 is slower than float32
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be float32 or bfloat16, got {precision!r}")


def bag_probability(logits: np.ndarray, task: str) -> np.ndarray:
    """Class probabilities (C,) (binary: (1,) positive prob) or survival risk (1,)."""
    t = torch.from_numpy(np.asarray(logits, dtype=np.float64))[None]
    if task == "survival":
        return risk_score(t).numpy()
    if t.shape[-1] == 1:
        return torch.sigmoid(t)[0].numpy()
    return torch.softmax(t, dim=-1)[0].numpy()


@torch.no_grad()
def predict(
    model: MILModel,
    objective: Objective,
    bags: list[Bag],
    task: str,
    device: str = "cpu",
    keep_attention: bool = False,
) -> list[Prediction]:
    """Frozen-model predictions (eval mode) with the slide loss of each bag."""
    model.eval()
    objective.eval()
    dev = torch.device(device)
    out: list[Prediction] = []
    for bag in prefetch(bags, range(len(bags))):
        b = _to(bag, dev)
        output = objective.predict(model, b)
        loss = float(slide_loss(output.logits, b, task))
        pred = Prediction(bag.slide_id, output.logits[0].detach().cpu().double().numpy(), loss)
        if keep_attention:
            # positive class (binary) or the predicted class: no label is used at prediction time
            cls = 1 if output.logits.shape[-1] == 1 else int(output.logits[0].argmax())
            if task == "survival":
                cls = 0
            s, w = output.class_scores(cls), output.class_weights(cls)
            pred.scores = None if s is None else s[0].cpu().numpy()
            pred.weights = None if w is None else w[0].cpu().numpy()
            if output.instance_logits is not None:
                il = output.instance_logits[0]
                prob = (
                    torch.sigmoid(il[:, 0]) if il.shape[-1] == 1 else torch.softmax(il, -1)[:, cls]
                )
                pred.instance_prob = prob.cpu().numpy()
        out.append(pred)
    return out


def _order(train: list[Bag], settings: TrainSettings, gen: torch.Generator) -> list[int]:
    n = len(train)
    if not settings.balanced_sampling:
        return torch.randperm(n, generator=gen).tolist()
    labels = np.array([int(b.label) for b in train])
    counts = {c: int((labels == c).sum()) for c in np.unique(labels)}
    w = torch.tensor([1.0 / counts[int(c)] for c in labels], dtype=torch.double)
    return torch.multinomial(w, n, replacement=True, generator=gen).tolist()


def _val_auroc(preds: list[Prediction], bags: list[Bag], task: str) -> float:
    if task != "classification":
        return float("nan")
    labels = np.array([int(b.label) for b in bags])
    if len(np.unique(labels)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    probs = np.stack([bag_probability(p.logits, task) for p in preds])
    if not np.isfinite(probs).all():  # a diverged model: fit reports it, no AUROC to give
        return float("nan")
    if probs.shape[1] == 1:
        return float(roc_auc_score(labels, probs[:, 0]))
    return float(roc_auc_score(labels, probs, multi_class="ovr"))


def fit(
    model: MILModel,
    objective: Objective,
    train: list[Bag],
    val: list[Bag],
    settings: TrainSettings,
    task: str,
    seed: int,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    *,
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` with ``objective`` on ``train``; select the epoch on ``val`` (never test).

    The caller has already called ``objective.setup``. Returns the best state (restored into
    ``model``), the best epoch and one history row per epoch.

    ``on_checkpoint(state)`` receives, after every epoch, everything needed to continue
    (:func:`training_state`); ``fit(..., resume=state)`` continues from it and ends with the
    same weights and history as an uninterrupted run (same seed, same data).
    """
    dev = torch.device(settings.device)
    model.to(dev)
    objective.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    params += [p for p in objective.parameters() if p.requires_grad]
    opt = _adam(params, settings.lr, settings.weight_decay)
    n_steps = steps_per_epoch(len(train), settings.batch_accumulation)
    sched = build_scheduler(opt, settings, n_steps)
    objective.set_steps_per_epoch(n_steps)
    gen = torch.Generator().manual_seed(seed)
    if not val:
        raise ValueError("fit needs validation bags for model selection")
    if settings.select_from_epoch >= settings.max_epochs:
        raise ValueError(
            f"select_from_epoch ({settings.select_from_epoch}) must be < max_epochs "
            f"({settings.max_epochs})"
        )
    best = _snapshot(model, objective, -1, float("inf"))
    history: list[dict[str, float]] = []
    since_best = 0
    first = 0
    if resume is not None:
        first, best, history, since_best = _restore(resume, model, objective, opt, sched, gen)
    for epoch in range(first, settings.max_epochs):
        objective.on_epoch_start(epoch, settings.max_epochs)
        model.train()
        objective.train()
        model.fallback_events = None  # counted by MILModel.pool_weights (thresholding)
        sums: dict[str, Any] = {}
        opt.zero_grad(set_to_none=True)
        order = _order(train, settings, gen)
        # streamed bags are read ahead in a background thread; in-memory bags pass through
        for step, bag in enumerate(prefetch(train, order), start=1):
            with _autocast(dev, settings.precision):
                result = objective(model, _to(bag, dev))
            (result.loss / settings.batch_accumulation).backward()
            for k, v in result.terms.items():  # summed on the device: no per-step sync
                v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
                sums[k] = sums.get(k, 0.0) + v
            if step % settings.batch_accumulation == 0 or step == len(order):
                opt.step()
                opt.zero_grad(set_to_none=True)
                if sched is not None:
                    sched.step()
                objective.after_optimizer_step(model)
        row = {
            "epoch": float(epoch),
            **{f"train_{k}": float(v) / len(order) for k, v in sums.items()},
            "lr": float(opt.param_groups[0]["lr"]),
        }
        if model.attention_threshold > 0:
            # bags whose thresholded attention was all suppressed (plain-softmax fallback)
            events = getattr(model, "fallback_events", None)
            row["attn_fallback"] = 0.0 if events is None else float(events)
        row.update(objective.epoch_stats())
        last = epoch == settings.max_epochs - 1
        if (epoch + 1) % settings.eval_every == 0 or last:
            preds = predict(model, objective, val, task, settings.device)
            row["val_loss"] = float(np.mean([p.loss for p in preds]))
            row["val_auroc"] = _val_auroc(preds, val, task)
            if epoch >= settings.select_from_epoch:
                if row["val_loss"] < best.best_val_loss:
                    best = _snapshot(model, objective, epoch, row["val_loss"])
                    since_best = 0
                else:
                    since_best += settings.eval_every
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if on_checkpoint is not None:
            on_checkpoint(
                training_state(epoch, model, objective, opt, sched, gen, best, history, since_best)
            )
        diverged = sorted(
            k for k, v in row.items() if k.startswith("train_") and not math.isfinite(v)
        )
        if diverged:  # NaN weights cannot recover: later epochs would only repeat this one
            log.warning(
                "epoch %d: training loss %s is not finite (training diverged); stopping, the "
                "selected epoch is the best one before it",
                epoch, ", ".join(f"{k[6:]}={row[k]}" for k in diverged),
            )  # fmt: skip
            break
        if epoch + 1 >= settings.warmup_epochs and since_best >= settings.patience:
            break
    if best.best_epoch < 0:
        raise TrainingDivergedError(
            f"no epoch from {settings.select_from_epoch} on had a finite validation loss "
            f"(last epoch {history[-1]['epoch']:.0f}: train loss "
            f"{history[-1].get('train_total', float('nan'))}, val loss "
            f"{history[-1].get('val_loss', float('nan'))}): training diverged or the data give "
            "NaN; nothing can be selected. Lower train.lr or check the inputs."
        )
    model.load_state_dict(best.state)
    objective.load_state_dict(best.objective_state)
    best.history = history
    return best


def generator_states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state of every ``torch.Generator`` held as an attribute by ``module`` or a submodule
    (``"<submodule path>:<attribute>"`` -> state): objectives and models draw masks, pairs and
    pseudo-bags from their own generators, which a state dict does not hold."""
    out = {}
    for path, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, torch.Generator):
                out[f"{path}:{attr}"] = value.get_state()
    return out


def set_generator_states(module: torch.nn.Module, states: dict[str, torch.Tensor]) -> None:
    """Restore :func:`generator_states` (a generator not created yet, e.g. one made on the
    first training step, is created)."""
    subs = dict(module.named_modules())
    for key, state in states.items():
        path, attr = key.rsplit(":", 1)
        if path not in subs:
            raise ValueError(f"resume state has a generator for a missing submodule {path!r}")
        gen = getattr(subs[path], attr, None)
        if gen is None:
            gen = torch.Generator()
            setattr(subs[path], attr, gen)
        gen.set_state(state)


def training_state(
    epoch: int,
    model: MILModel,
    objective: Objective,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    gen: torch.Generator,
    best: FitResult,
    history: list[dict[str, float]],
    since_best: int,
) -> dict[str, Any]:
    """Everything :func:`fit` needs to continue after ``epoch`` (a deep copy; torch-saveable)."""
    return copy.deepcopy(
        {
            "epoch": epoch,
            "model": model.state_dict(),
            "objective": objective.state_dict(),
            "generators": {
                "model": generator_states(model),
                "objective": generator_states(objective),
            },
            "optimizer": opt.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(),
            "generator": gen.get_state(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),  # noqa: NPY002 - the global RNG is what is seeded
                "torch": torch.get_rng_state(),
            },
            "best": {
                "state": best.state,
                "epoch": best.best_epoch,
                "val_loss": best.best_val_loss,
                "objective": best.objective_state,
            },
            "history": history,
            "since_best": since_best,
        }
    )


def _restore(
    state: dict[str, Any],
    model: MILModel,
    objective: Objective,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    gen: torch.Generator,
) -> tuple[int, FitResult, list[dict[str, float]], int]:
    """Load a :func:`training_state`; returns (next epoch, best, history, since_best)."""
    if (state.get("scheduler") is None) != (sched is None):
        raise ValueError("resume state and train.scheduler disagree (one has a schedule)")
    model.load_state_dict(state["model"])
    objective.load_state_dict(state["objective"])
    set_generator_states(model, state["generators"]["model"])
    set_generator_states(objective, state["generators"]["objective"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None:
        sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["rng"]["torch"])
    b = state["best"]
    best = FitResult(
        copy.deepcopy(b["state"]),
        int(b["epoch"]),
        float(b["val_loss"]),
        objective_state=copy.deepcopy(b["objective"]),
    )
    return int(state["epoch"]) + 1, best, list(state["history"]), int(state["since_best"])


def _snapshot(model: MILModel, objective: Objective, epoch: int, val_loss: float) -> FitResult:
    return FitResult(
        copy.deepcopy(model.state_dict()),
        epoch,
        val_loss,
        objective_state=copy.deepcopy(objective.state_dict()),
    )
