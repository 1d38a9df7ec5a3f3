"""One fold end to end: data, fit on train/val, freeze, predict test, write outputs.

The order is the guarantee that test slides never influence a choice: :func:`fit` sees only
training and validation bags; the decision threshold is computed from validation predictions;
only then are test bags loaded into the loop and predicted by the frozen model.

Outputs (``RUN/folds/<k>/``): ``checkpoint.pt``, ``history.csv``, ``predictions.csv``,
``result.json`` (written last: its presence marks the fold as finished and final), and
``RUN/attention/<k>/<slide_id>.h5``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histomil._io import atomic_path, atomic_write_json, write_csv
from histomil.bags.bag import Bag
from histomil.bags.dataset import bag_file_attrs
from histomil.evaluation.metrics import prob_columns
from histomil.training import metrics as M
from histomil.training.cohort import n_outputs, training_manifest, write_split
from histomil.training.config import TrainConfig, config_to_dict
from histomil.training.data import (
    load_cohort_bags,
    patient_bags,
    prepare_train_bags,
    set_time_bins,
)
from histomil.training.splits import FoldSplit, stratified_subsample
from histomil.training.trainer import Prediction, bag_probability, fit, predict, seed_everything

log = logging.getLogger(__name__)
DONE = "result.json"
RESUME = "resume.pt"  # epoch-level state of an unfinished fold (removed when it finishes)


@dataclass
class FoldData:
    train: list[Bag]
    val: list[Bag]
    test: list[Bag]
    n_classes: int
    in_dim: int
    manifest: pd.DataFrame


def load_fold_data(config: TrainConfig, split: FoldSplit, seed: int) -> FoldData:
    """Bags of the fold with training-only label regimes and (survival) training-only bins."""
    df, n_classes, problems = training_manifest(config)
    if problems:
        raise ValueError("; ".join(problems))
    bags = load_cohort_bags(df, config.data.bags)
    ids = {"train": list(split.train), "val": list(split.val), "test": list(split.test)}
    patient = config.data.patient_level
    if config.task == "survival" and patient is not False and "case_id" in df.columns:
        bags, members = patient_bags(bags)
        owner = {s: case for case, slides in members.items() for s in slides}
        ids = {k: sorted({owner[s] for s in v}) for k, v in ids.items()}
    train_ids = ids["train"]
    if config.data.train_fraction < 1.0:
        strata = [
            int(bags[i].event or 0) if config.task == "survival" else int(bags[i].label)
            for i in train_ids
        ]
        train_ids = stratified_subsample(train_ids, strata, config.data.train_fraction, seed)
    train = prepare_train_bags([bags[i] for i in train_ids], config.data, seed)
    val = [bags[i] for i in ids["val"]]
    test = [bags[i] for i in ids["test"]]
    if config.task == "survival":
        edges = M.survival_bins(
            np.array([b.time for b in train], dtype=float),
            np.array([b.event for b in train]),
            config.train.survival_bins,
        )
        train, val, test = (set_time_bins(x, edges) for x in (train, val, test))
    in_dim = int(train[0].features.shape[1])
    return FoldData(train, val, test, n_outputs(config, n_classes), in_dim, df)


def _rows(preds: list[Prediction], bags: list[Bag], split: str, fold: int, task: str) -> list[dict]:
    rows = []
    for p, b in zip(preds, bags, strict=True):
        prob = bag_probability(p.logits, task)
        row: dict[str, Any] = {"fold": fold, "slide_id": b.slide_id, "split": split}
        if task == "survival":
            row.update(risk=float(prob[0]), time=b.time, event=b.event, bin=int(b.label))
        elif prob.shape[0] == 1:
            row.update(label=int(b.label), prob=float(prob[0]))
        else:
            row.update(label=int(b.label), prob=float(prob.max()), pred=int(prob.argmax()))
            row.update({f"prob_{c}": float(v) for c, v in enumerate(prob)})
        rows.append(row)
    return rows


def fold_metrics(rows: pd.DataFrame, task: str, threshold: float | None) -> dict[str, float]:
    """Metrics of one split's prediction rows."""
    if rows.empty:
        return {}
    if task == "survival":
        return M.c_index_with_ci(rows["time"].values, rows["risk"].values, rows["event"].values)
    prob_cols = [c for c in prob_columns(rows.columns) if rows[c].notna().all()]
    if prob_cols:
        return M.multiclass_metrics(rows["label"].values, rows[prob_cols].values)
    return M.binary_metrics(rows["label"].values, rows["prob"].values, threshold)


def _export_attention(run_dir, fold, config, data, bags, preds, splits_of) -> None:
    paths = {}
    if "slide_path" in data.manifest.columns:
        paths = dict(
            zip(data.manifest["slide_id"].astype(str), data.manifest["slide_path"], strict=True)
        )
    for bag, pred in zip(bags, preds, strict=True):
        bag_path, battrs = bag_file_attrs(config.data.bags, bag.slide_id)
        psize = battrs.get("patch_size_level0", battrs.get("coords.patch_size_level0"))
        prob = bag_probability(pred.logits, config.task)
        attrs = {
            "slide_id": bag.slide_id,
            "label": bag.label,
            "prob": float(prob[0]) if prob.shape[0] == 1 else float(prob.max()),
            "split": splits_of[bag.slide_id],
            "model": config.model.name,
            "objective": config.objective.name,
            "bag_path": bag_path,
            "slide_path": paths.get(bag.slide_id),
            "patch_size_level0": None if psize is None else int(psize),
        }
        from histomil.training.attention import write_attention

        write_attention(
            Path(run_dir) / "attention" / str(fold) / f"{bag.slide_id}.h5", bag, pred, attrs
        )


@contextlib.contextmanager
def _epoch_bar(fold: int, max_epochs: int):
    """Per-epoch progress (train and val loss, val AUROC, best epoch so far) in the main process;
    transient, and silent in worker processes and when the output is not a terminal."""
    import multiprocessing as mp

    if mp.parent_process() is not None:
        yield lambda row: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(
        TextColumn(f"fold {fold} epoch"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), transient=True,
    )  # fmt: skip
    bar = progress.add_task("epochs", total=max_epochs, status="")

    best = [float("inf"), "-"]  # lowest validation loss so far and its epoch (1-based)

    def update(row: dict) -> None:
        epoch, nan = int(row.get("epoch", 0)) + 1, float("nan")
        train = row.get("train_bag", row.get("train_total", row.get("train_loss", nan)))
        if row.get("val_loss", nan) < best[0]:
            best[:] = [row["val_loss"], str(epoch)]
        status = f"train loss {train:.4f} | val loss {row.get('val_loss', nan):.4f}"
        status += f" | val AUROC {row.get('val_auroc', nan):.3f} | best epoch {best[1]}"
        progress.update(bar, advance=1, status=status)

    with progress:
        yield update


def run_fold(
    config: TrainConfig,
    split: FoldSplit,
    run_dir: str,
    baseline_state: dict[str, Any] | None = None,
) -> dict:
    """Train and evaluate one fold; returns (and writes) its result summary.

    ``baseline_state``: the fold's trained baseline for an objective with ``needs_baseline``
    (resolved by :func:`histomil.training.baseline.run_fold_with_baseline`); required then.
    """
    import torch

    from histomil.hardware import keep_freed_memory
    from histomil.models import create_model
    from histomil.objectives import TrainContext, create_objective

    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    keep_freed_memory()  # no page faults on every step's large activations (speed only)
    fold_dir = Path(run_dir) / "folds" / str(split.fold)
    write_split(fold_dir, split)  # the exact slide ids, before anything is trained on them
    seed = config.train.seed + split.fold
    seed_everything(seed)
    data = load_fold_data(config, split, seed)
    seed_everything(seed)
    model = create_model(config.model.name, data.in_dim, data.n_classes, **config.model.params)
    objective = create_objective(config.objective.name, **config.objective.params)
    context = TrainContext(split.fold, config.task, data.n_classes, str(run_dir), seed)
    if objective.needs_baseline:
        if baseline_state is None:
            raise ValueError(
                f"objective {config.objective.name!r} needs a trained baseline: run the fold "
                "with histomil.training.baseline.run_fold_with_baseline"
            )
        context = replace(context, baseline_state=baseline_state)
        seed_everything(seed)
    objective.setup(model, context)
    identity = resume_identity(config, split, run_dir, baseline_state)
    state = read_resume_state(fold_dir / RESUME, identity)
    with _epoch_bar(split.fold, config.train.max_epochs) as show:

        def keep(snapshot: dict) -> None:  # after every epoch: what an interrupted fold resumes
            with atomic_path(fold_dir / RESUME) as tmp:
                torch.save({"identity": identity, "state": snapshot}, tmp)

        result = fit(
            model, objective, data.train, data.val, config.train, config.task, seed, show,
            resume=state, on_checkpoint=keep,
        )  # fmt: skip
    history = result.history
    # ---- the model is frozen from here on; threshold from validation predictions only ----
    val_preds = predict(
        model, objective, data.val, config.task, config.train.device, keep_attention=True
    )
    val_rows = pd.DataFrame(_rows(val_preds, data.val, "val", split.fold, config.task))
    threshold = None
    if config.task == "classification" and "prob" in val_rows and data.n_classes == 1:
        threshold = M.pick_threshold(
            val_rows["label"].values, val_rows["prob"].values, config.train.threshold
        )
    test_preds = predict(
        model, objective, data.test, config.task, config.train.device, keep_attention=True
    )
    test_rows = pd.DataFrame(_rows(test_preds, data.test, "test", split.fold, config.task))
    # ---- outputs ----
    fold_dir.mkdir(parents=True, exist_ok=True)
    if config.output.save_checkpoints:
        with atomic_path(fold_dir / "checkpoint.pt") as tmp:
            torch.save(
                {
                    "model": result.state,
                    "objective": result.objective_state,
                    "best_epoch": result.best_epoch,
                    "n_classes": data.n_classes,
                    "in_dim": data.in_dim,
                },
                tmp,
            )
    write_csv(pd.DataFrame(history), fold_dir / "history.csv")
    preds = pd.concat([val_rows, test_rows], ignore_index=True)
    write_csv(preds, fold_dir / "predictions.csv")
    if config.output.attention:
        splits_of = {b.slide_id: "val" for b in data.val} | {b.slide_id: "test" for b in data.test}
        for name, bags, ps in (("val", data.val, val_preds), ("test", data.test, test_preds)):
            if name in config.output.attention_splits:
                _export_attention(run_dir, split.fold, config, data, bags, ps, splits_of)
    summary = {
        "fold": split.fold,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": len(history),
        "threshold": threshold,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
        "val": fold_metrics(val_rows, config.task, threshold),
        "test": fold_metrics(test_rows, config.task, threshold),
    }
    atomic_write_json(fold_dir / DONE, summary)
    (fold_dir / RESUME).unlink(missing_ok=True)
    return summary


def resume_identity(
    config: TrainConfig, split: FoldSplit, run_dir: str | Path, baseline: dict | None
) -> str:
    """SHA-256 of everything an epoch-level resume state depends on: the run's recorded
    provenance (resolved config with defaults, splits, manifest and bag file identities), this
    fold's slide ids, the baseline's weights, the histomil and torch versions, and the dropout
    mask stream. A state with another identity is never resumed."""
    import hashlib

    import torch

    from histomil import __version__
    from histomil.nn import dropout
    from histomil.training.cohort import resolved_settings, split_record

    digest = hashlib.sha256()
    recorded = Path(run_dir) / "provenance.json"
    parts = {
        "provenance": json.loads(recorded.read_text(encoding="utf-8"))
        if recorded.is_file()
        else None,
        "config": config_to_dict(config),
        "resolved": resolved_settings(config),
        "fold": split.fold,
        "split": split_record(split)["sha256"],
        "histomil": __version__,
        "torch": torch.__version__,
        "dropout_mask": dropout.MASK_STREAM,
    }
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
    for key in sorted(baseline or {}):  # the teacher's weights (MHIM)
        value = baseline[key]
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def read_resume_state(path: Path, identity: str) -> dict | None:
    """The epoch-level state an interrupted run of this fold left (``resume.pt``), or None when
    there is none, it was made with other settings or inputs, or it cannot be read (then the
    fold starts from its first epoch, as an uninterrupted run would)."""
    import torch

    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a torn or foreign file only costs a restart
        log.warning("%s cannot be read (%s): the fold starts from epoch 0", path, err)
        return None
    if not isinstance(saved, dict) or saved.get("identity") != identity:
        log.warning("%s was made with other settings or inputs: the fold starts from epoch 0", path)
        return None
    # a warning so that the command line shows it (no logging is configured there)
    log.warning("%s: resuming after epoch %d of an interrupted run", path, saved["state"]["epoch"])
    return saved["state"]


def read_fold_result(run_dir: str | Path, fold: int) -> dict | None:
    """The finished fold's summary, or None when the fold has not finished."""
    path = Path(run_dir) / "folds" / str(fold) / DONE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
