"""Pinned ``run_fold`` outputs (issue 22): with ``fit`` and ``predict`` replaced by fakes that
return chosen logits, every file a fold writes is compared with values stated by hand."""

from __future__ import annotations

import io
import json
import math
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import rich
import torch
from rich.console import Console

from histomil import objectives as objectives_mod
from histomil.training import fold as fold_mod
from histomil.training import metrics as M
from histomil.training.config import config_from_dict
from histomil.training.splits import FoldSplit, stratified_subsample
from histomil.training.trainer import FitResult, Prediction, seed_everything

from ._tiny import tiny_cohort, tiny_config

IDS = [f"s{i:02d}" for i in range(24)]
TRAIN, VAL, TEST = tuple(IDS[:12]), tuple(IDS[12:18]), tuple(IDS[18:])
HISTORY = [
    {"epoch": 0.0, "train_bag": 0.7, "val_loss": 0.6},
    {"epoch": 1.0, "train_bag": 0.5, "val_loss": 0.25},
    {"epoch": 2.0, "train_bag": 0.4, "val_loss": 0.3},
]


def _index(sid: str) -> int:
    return int(sid[1:]) if sid[0] == "s" and sid[1:].isdigit() else zlib.crc32(sid.encode()) % 17


def _logit(sid: str, n_out: int) -> np.ndarray:
    """Binary: a logit of (i - 15) / 2; more outputs: output (i % 3) ahead by (1 + i / 10)."""
    i = _index(sid)
    if n_out == 1:
        return np.array([(i - 15) / 2.0])
    out = np.zeros(n_out)
    out[i % 3] = 1.0 + i / 10.0
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def binary_cohort(tmp_path_factory) -> Path:
    labels = [1 if i in (13, 16, 17, 19, 20, 22) else 0 for i in range(24)]
    labels[0], labels[1] = 1, 1  # some positives in the training set too
    return tiny_cohort(tmp_path_factory.mktemp("fold_bin"), IDS, labels)


@pytest.fixture(scope="module")
def three_cohort(tmp_path_factory) -> Path:
    labels = [(i + (i // 7)) % 3 for i in range(24)]
    return tiny_cohort(tmp_path_factory.mktemp("fold_mc"), IDS, labels)


@pytest.fixture
def fakes(monkeypatch):
    """``fit`` and ``predict`` replaced: the calls are recorded in order."""
    calls: list[tuple] = []

    def fit(model, objective, train, val, settings, task, seed, record, *, resume, on_checkpoint):
        assert resume is None and callable(on_checkpoint)  # a fresh fold: nothing to resume
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        calls.append(("fit", [b.slide_id for b in train], [b.slide_id for b in val], settings,
                      task, seed, state, objective, model))  # fmt: skip
        for row in HISTORY:
            record(dict(row))
        history = [dict(row) for row in HISTORY]
        return FitResult(
            {"w": torch.tensor([1.5])}, 1, 0.25, history=history, objective_state={"o": 2}
        )

    def predict(model, objective, bags, task, device="cpu", keep_attention=False):
        calls.append(("predict", [b.slide_id for b in bags], task, device, keep_attention,
                      model, objective))  # fmt: skip
        n_out = model.n_classes if hasattr(model, "n_classes") else 1
        out = []
        for b in bags:
            n = int(b.features.shape[0])
            p = Prediction(b.slide_id, _logit(b.slide_id, n_out), 0.1)
            p.weights = np.full(n, 1.0 / n)
            p.scores = np.arange(n, dtype=float)
            out.append(p)
        return out

    monkeypatch.setattr(fold_mod, "fit", fit)
    monkeypatch.setattr(fold_mod, "predict", predict)
    return calls


def _config(cohort: Path, **sections):
    base = {
        "train": {"threads": 2, "seed": 5, "threshold": "0.5"},
        "output": {"attention": True, "save_checkpoints": True},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return config_from_dict(tiny_config(cohort, **base))


def _labels(cohort: Path) -> dict[str, int]:
    df = pd.read_csv(cohort, dtype={"slide_id": str})
    return dict(zip(df["slide_id"], df["label"].astype(int), strict=True))


def test_binary_fold_writes_every_output(binary_cohort, tmp_path, fakes):
    config = _config(binary_cohort)
    split = FoldSplit(2, TRAIN, VAL, TEST)
    run = tmp_path / "run"
    summary = fold_mod.run_fold(config, split, str(run))
    assert torch.get_num_threads() == 2
    labels = _labels(binary_cohort)
    # fit saw train and val only, with the fold's seed; then val and test were predicted
    assert [c[0] for c in fakes] == ["fit", "predict", "predict"]
    _, fit_train, fit_val, settings, task, seed, _, _, _ = fakes[0]
    assert fit_train == list(TRAIN) and fit_val == list(VAL)
    assert settings is config.train and task == "classification" and seed == 5 + 2
    assert fakes[1][1:5] == (list(VAL), "classification", "cpu", True)
    assert fakes[2][1:5] == (list(TEST), "classification", "cpu", True)
    # the fitted model and its objective predict
    assert fakes[1][6] is fakes[0][7] and fakes[2][6] is fakes[0][7]
    assert fakes[1][5] is fakes[0][8] and fakes[2][5] is fakes[0][8]

    def rows(ids, name):
        return [
            {"fold": 2, "slide_id": s, "split": name, "label": labels[s],
             "prob": _sigmoid((int(s[1:]) - 15) / 2.0)}
            for s in ids
        ]  # fmt: skip

    want = pd.DataFrame(rows(VAL, "val") + rows(TEST, "test"))
    fold_dir = run / "folds" / "2"
    got = pd.read_csv(fold_dir / "predictions.csv", dtype={"slide_id": str})
    assert list(got.columns) == ["fold", "slide_id", "split", "label", "prob"]
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
    val, test = want[want.split == "val"], want[want.split == "test"]
    expected = {
        "fold": 2,
        "best_epoch": 1,
        "best_val_loss": 0.25,
        "epochs_run": 3,
        "threshold": 0.5,
        "n_train": 12,
        "n_val": 6,
        "n_test": 6,
        "val": M.binary_metrics(val["label"].values, val["prob"].values, 0.5),
        "test": M.binary_metrics(test["label"].values, test["prob"].values, 0.5),
    }
    assert summary == expected
    # val: s12..s17 -> probs below 0.5 up to s14, 0.5 at s15; labels 0,1,0,0,1,1
    assert expected["val"]["accuracy"] == pytest.approx(4 / 6)
    assert json.loads((fold_dir / "result.json").read_text()) == expected
    assert fold_mod.read_fold_result(run, 2) == expected
    assert fold_mod.read_fold_result(run, 3) is None
    assert fold_mod.read_fold_result(str(run), 2) == expected
    split_file = json.loads(next(fold_dir.glob("split*.json")).read_text())
    assert split_file["test"] == list(TEST)
    hist = pd.read_csv(fold_dir / "history.csv")
    pd.testing.assert_frame_equal(hist, pd.DataFrame(HISTORY))
    ckpt = torch.load(fold_dir / "checkpoint.pt", weights_only=True)
    assert set(ckpt) == {"model", "objective", "best_epoch", "n_classes", "in_dim"}
    assert torch.equal(ckpt["model"]["w"], torch.tensor([1.5]))
    assert ckpt["objective"] == {"o": 2} and ckpt["best_epoch"] == 1
    assert ckpt["n_classes"] == 1 and ckpt["in_dim"] == 8
    # attention of every val and test slide, with its attributes
    files = sorted(p.name for p in (run / "attention" / "2").iterdir())
    assert files == sorted(f"{s}.h5" for s in VAL + TEST)
    for sid in VAL + TEST:
        with h5py.File(run / "attention" / "2" / f"{sid}.h5", "r") as f:
            attrs = dict(f.attrs)
            n = f["attention"].shape[0]
            np.testing.assert_allclose(f["attention"][:], np.full(n, 1.0 / n), rtol=1e-6)
            np.testing.assert_array_equal(f["scores"][:], np.arange(n))
        assert attrs.pop("bag_path") == str(binary_cohort.parent / "bags" / f"{sid}.h5")
        assert attrs.pop("prob") == pytest.approx(_sigmoid((int(sid[1:]) - 15) / 2.0))
        assert attrs == {
            "slide_id": sid,
            "label": labels[sid],
            "split": "val" if sid in VAL else "test",
            "model": "abmil",
            "objective": "bag",
            "patch_size_level0": 256,
        }


def test_youden_threshold_from_validation_only(binary_cohort, tmp_path, fakes):
    config = _config(binary_cohort, train={"threshold": "youden"})
    summary = fold_mod.run_fold(config, FoldSplit(0, TRAIN, VAL, TEST), str(tmp_path))
    labels = _labels(binary_cohort)
    y = np.array([labels[s] for s in VAL])
    p = np.array([_sigmoid((int(s[1:]) - 15) / 2.0) for s in VAL])
    assert summary["threshold"] == M.pick_threshold(y, p, "youden")
    yt = np.array([labels[s] for s in TEST])
    pt = np.array([_sigmoid((int(s[1:]) - 15) / 2.0) for s in TEST])
    assert summary["test"] == M.binary_metrics(yt, pt, summary["threshold"])


def test_attention_splits_and_switches(binary_cohort, tmp_path, fakes):
    config = _config(
        binary_cohort,
        output={"attention_splits": ["test"], "save_checkpoints": False},
    )
    fold_mod.run_fold(config, FoldSplit(1, TRAIN, VAL, TEST), str(tmp_path))
    files = sorted(p.name for p in (tmp_path / "attention" / "1").iterdir())
    assert files == [f"{s}.h5" for s in TEST]
    with h5py.File(tmp_path / "attention" / "1" / f"{TEST[0]}.h5", "r") as f:
        assert f.attrs["split"] == "test"
    assert not (tmp_path / "folds" / "1" / "checkpoint.pt").exists()
    config = _config(binary_cohort, output={"attention": False})
    fold_mod.run_fold(config, FoldSplit(4, TRAIN, VAL, TEST), str(tmp_path))
    assert not (tmp_path / "attention" / "4").exists()
    assert (tmp_path / "folds" / "4" / "checkpoint.pt").is_file()


def test_slide_path_attribute_from_the_manifest(tmp_path, fakes):
    manifest = tiny_cohort(tmp_path / "c", IDS, [i % 2 for i in range(24)])
    df = pd.read_csv(manifest, dtype=str)
    df["slide_path"] = [f"/slides/{s}.svs" for s in df["slide_id"]]
    df.to_csv(manifest, index=False)
    config = _config(manifest)
    fold_mod.run_fold(config, FoldSplit(0, TRAIN, VAL, TEST), str(tmp_path / "run"))
    with h5py.File(tmp_path / "run" / "attention" / "0" / "s20.h5", "r") as f:
        assert f.attrs["slide_path"] == "/slides/s20.svs"


def test_three_class_fold_rows_and_metrics(three_cohort, tmp_path, fakes):
    config = _config(three_cohort, data={"n_classes": 3})
    summary = fold_mod.run_fold(config, FoldSplit(0, TRAIN, VAL, TEST), str(tmp_path))
    labels = _labels(three_cohort)
    got = pd.read_csv(tmp_path / "folds" / "0" / "predictions.csv", dtype={"slide_id": str})
    assert list(got.columns) == [
        "fold", "slide_id", "split", "label", "prob", "pred", "prob_0", "prob_1", "prob_2",
    ]  # fmt: skip
    for sid in VAL + TEST:
        i = int(sid[1:])
        z = 1.0 + i / 10.0
        top = math.exp(z) / (math.exp(z) + 2.0)
        row = got[got.slide_id == sid].iloc[0]
        assert row["label"] == labels[sid] and row["pred"] == i % 3
        assert row["prob"] == pytest.approx(top, rel=1e-12)
        for c in range(3):
            want = top if c == i % 3 else 1.0 / (math.exp(z) + 2.0)
            assert row[f"prob_{c}"] == pytest.approx(want, rel=1e-12)
    assert summary["threshold"] is None
    for name in ("val", "test"):
        rows = got[got.split == name]
        want = M.multiclass_metrics(
            rows["label"].values, rows[["prob_0", "prob_1", "prob_2"]].values
        )
        assert summary[name] == want
    # attention: the predicted class's probability
    with h5py.File(tmp_path / "attention" / "0" / "s19.h5", "r") as f:
        assert f.attrs["prob"] == pytest.approx(math.exp(2.9) / (math.exp(2.9) + 2.0))
    # the checkpoint records three outputs
    assert torch.load(tmp_path / "folds" / "0" / "checkpoint.pt")["n_classes"] == 3


def test_survival_fold_rows(survival_cohort, tmp_path, fakes):
    split, df = _survival_split(survival_cohort)
    config = config_from_dict(
        {
            "data": {
                "manifest": str(survival_cohort),
                "bags": str(survival_cohort.parent / "bags"),
            },
            "task": "survival",
            "model": {"name": "abmil", "params": {"hidden": 8, "attn_dim": 4}},
            "objective": {"name": "bag", "params": {}},
            "train": {"survival_bins": 4, "seed": 0, "max_epochs": 2},
            "split": {"scheme": "monte_carlo", "repeats": 1, "test": "manifest"},
            "output": {"attention": True, "save_checkpoints": False},
        }
    )
    data = fold_mod.load_fold_data(config, split, 0)
    summary = fold_mod.run_fold(config, split, str(tmp_path))
    got = pd.read_csv(tmp_path / "folds" / "0" / "predictions.csv", dtype={"slide_id": str})
    assert list(got.columns) == ["fold", "slide_id", "split", "risk", "time", "event", "bin"]
    assert summary["threshold"] is None
    for name, bags in (("val", data.val), ("test", data.test)):
        rows = got[got.split == name].reset_index(drop=True)
        assert rows["slide_id"].tolist() == [b.slide_id for b in bags]
        assert rows["time"].tolist() == pytest.approx([b.time for b in bags])
        assert rows["event"].tolist() == [b.event for b in bags]
        assert rows["bin"].tolist() == [int(b.label) for b in bags]
        # 4 hazard logits per bag from the fake; risk = -sum_k prod_{j<=k} sigmoid(-h_j)
        for r, b in zip(rows.itertuples(), bags, strict=True):
            surv, risk = 1.0, 0.0
            for h in _logit(b.slide_id, 4):
                surv *= _sigmoid(-h)
                risk -= surv
            assert r.risk == pytest.approx(risk, rel=1e-12)
        want = M.c_index_with_ci(rows["time"].values, rows["risk"].values, rows["event"].values)
        assert summary[name] == want
        # the attention file's prob is the risk too
        b = bags[0]
        with h5py.File(tmp_path / "attention" / "0" / f"{b.slide_id}.h5", "r") as f:
            assert f.attrs["prob"] == pytest.approx(rows["risk"].iloc[0], rel=1e-12)


def test_fold_metrics_by_hand():
    assert fold_mod.fold_metrics(pd.DataFrame(), "classification", 0.5) == {}
    assert fold_mod.fold_metrics(pd.DataFrame(), "survival", None) == {}
    # binary: probs 0.2, 0.6, 0.9 for labels 0, 0, 1 at 0.5: accuracy 2/3, AUROC 1
    rows = pd.DataFrame({"label": [0, 0, 1], "prob": [0.2, 0.6, 0.9]})
    got = fold_mod.fold_metrics(rows, "classification", 0.5)
    assert got["accuracy"] == pytest.approx(2 / 3) and got["auroc"] == pytest.approx(1.0)
    # a prob_ column with a missing value is not a class column: the binary metrics apply
    rows["prob_1"] = [0.1, np.nan, 0.3]
    assert fold_mod.fold_metrics(rows, "classification", 0.5) == got
    # three class columns, given in shuffled order: sorted before use
    mc = pd.DataFrame(
        {
            "label": [0, 1, 2, 2],
            "prob_2": [0.1, 0.1, 0.8, 0.2],
            "prob_0": [0.8, 0.1, 0.1, 0.5],
            "prob_1": [0.1, 0.8, 0.1, 0.3],
        }
    )
    got = fold_mod.fold_metrics(mc, "classification", None)
    assert got["accuracy"] == pytest.approx(3 / 4)
    assert got == M.multiclass_metrics(
        mc["label"].values, mc[["prob_0", "prob_1", "prob_2"]].values
    )
    # survival: concordant risks, C-index 1 with its bootstrap interval
    surv = pd.DataFrame({"time": [1.0, 2.0, 3.0, 4.0], "risk": [4.0, 3.0, 2.0, 1.0],
                         "event": [1, 1, 1, 0]})  # fmt: skip
    got = fold_mod.fold_metrics(surv, "survival", None)
    assert got["c_index"] == 1.0 and set(got) == {"c_index", "c_index_low", "c_index_high"}


def test_fold_seed_and_model_initialisation(binary_cohort, tmp_path, fakes):
    """The model is built right after seeding with train.seed + fold, so the same seed sum
    gives the same initial weights, and they match a model built by hand."""
    from histomil.models import create_model

    fold_mod.run_fold(_config(binary_cohort), FoldSplit(3, TRAIN, VAL, TEST), str(tmp_path))
    state = fakes[0][6]
    assert fakes[0][5] == 8
    seed_everything(8)
    ref = create_model("abmil", 8, 1, hidden=16, attn_dim=8)
    for k, v in ref.state_dict().items():
        assert torch.equal(state[k], v), k


def test_train_fraction_subsamples_the_training_bags(binary_cohort, tmp_path, fakes):
    config = _config(binary_cohort, data={"train_fraction": 0.5})
    fold_mod.run_fold(config, FoldSplit(1, TRAIN, VAL, TEST), str(tmp_path))
    labels = _labels(binary_cohort)
    want = stratified_subsample(list(TRAIN), [labels[s] for s in TRAIN], 0.5, 6)
    assert sorted(fakes[0][1]) == sorted(want) and len(want) == 6
    assert fakes[0][2] == list(VAL)


class _NeedsBaseline:
    needs_baseline = True

    def __init__(self):
        self.context = None

    def setup(self, model, context):
        self.model, self.context = model, context


def test_objective_that_needs_a_baseline(binary_cohort, tmp_path, fakes, monkeypatch):
    made: list[_NeedsBaseline] = []

    def create(name, **params):
        made.append(_NeedsBaseline())
        return made[-1]

    monkeypatch.setattr(objectives_mod, "create_objective", create)
    config = _config(binary_cohort, output={"attention": False})
    split = FoldSplit(0, TRAIN, VAL, TEST)
    with pytest.raises(ValueError) as err:
        fold_mod.run_fold(config, split, str(tmp_path))
    assert str(err.value) == (
        "objective 'bag' needs a trained baseline: run the fold with "
        "histomil.training.baseline.run_fold_with_baseline"
    )
    state = {"w": torch.zeros(1)}
    fold_mod.run_fold(config, split, str(tmp_path), baseline_state=state)
    ctx = made[-1].context
    assert type(made[-1].model).__name__ == "ABMIL" and made[-1].model.in_dim == 8
    assert ctx.baseline_state is state and ctx.fold == 0 and ctx.seed == 5
    assert ctx.task == "classification" and ctx.n_classes == 1 and ctx.run_dir == str(tmp_path)


def _terminal(monkeypatch, terminal: bool) -> io.StringIO:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=220, color_system=None)
    monkeypatch.setattr(rich, "_console", console)
    return out


def _bar_after(monkeypatch, fold: int, total: int, rows: list[dict]) -> str:
    """The bar's last line after showing ``rows`` (rich draws it on leaving the context)."""
    out = _terminal(monkeypatch, True)
    with fold_mod._epoch_bar(fold, total) as show:
        for row in rows:
            show(row)
    text = out.getvalue()
    return text[text.rindex(f"fold {fold} epoch") :]


def test_epoch_bar_fallback_keys(monkeypatch):
    rows = [
        {"train_total": 0.9, "val_loss": 0.8, "val_auroc": 0.25},
        {"epoch": 1.0, "train_loss": 0.7},
        {"epoch": 2.0, "train_bag": 0.6, "train_total": 0.1, "val_loss": 0.8},
    ]
    last = _bar_after(monkeypatch, 1, 4, rows[:1])
    assert "train loss 0.9000" in last and "val loss 0.8000" in last
    assert "val AUROC 0.250" in last and "best epoch 1" in last and "1/4" in last
    last = _bar_after(monkeypatch, 1, 4, rows[:2])
    assert "train loss 0.7000" in last and "val loss nan" in last
    assert "val AUROC nan" in last and "best epoch 1" in last and "2/4" in last
    last = _bar_after(monkeypatch, 1, 4, rows)
    # equal validation loss: the earlier epoch stays the best
    assert "train loss 0.6000" in last and "best epoch 1" in last and "3/4" in last
    last = _bar_after(monkeypatch, 1, 4, [{"epoch": 0.0, "val_loss": 0.5}])
    assert "train loss nan" in last and "best epoch 1" in last


def test_epoch_bar_before_any_validation_loss(monkeypatch):
    last = _bar_after(monkeypatch, 0, 2, [{"epoch": 0.0, "train_bag": 0.5}])
    assert "best epoch -" in last and "val loss nan" in last


def test_epoch_bar_is_silent_in_a_worker_process(monkeypatch):
    import multiprocessing

    out = _terminal(monkeypatch, True)
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    with fold_mod._epoch_bar(0, 2) as show:
        assert show({"epoch": 0.0, "train_bag": 0.7, "val_loss": 0.6}) is None
    assert out.getvalue() == ""


def test_export_attention_refuses_a_missing_prediction(binary_cohort, tmp_path):
    """One prediction per bag: a short list is an error, not a silently skipped slide."""
    config = _config(binary_cohort)
    data = fold_mod.load_fold_data(config, FoldSplit(0, TRAIN, VAL, TEST), 0)
    bags = data.test[:2]
    pred = Prediction(bags[0].slide_id, np.array([0.0]), 0.1, weights=np.ones(1), scores=None)
    with pytest.raises(ValueError):
        fold_mod._export_attention(
            tmp_path, 0, config, data, bags, [pred], {b.slide_id: "test" for b in bags}
        )


def test_patch_size_from_the_coords_attribute(tmp_path, fakes):
    manifest = tiny_cohort(tmp_path / "c", IDS, [i % 2 for i in range(24)])
    with h5py.File(manifest.parent / "bags" / "s18.h5", "a") as f:
        del f.attrs["patch_size_level0"]
        f["coords"].attrs["patch_size_level0"] = 512
    with h5py.File(manifest.parent / "bags" / "s19.h5", "a") as f:
        del f.attrs["patch_size_level0"]
    with h5py.File(manifest.parent / "bags" / "s20.h5", "a") as f:
        f["coords"].attrs["patch_size_level0"] = 1024  # the file attribute wins
    fold_mod.run_fold(_config(manifest), FoldSplit(0, TRAIN, VAL, TEST), str(tmp_path / "r"))
    folder = tmp_path / "r" / "attention" / "0"
    with h5py.File(folder / "s18.h5", "r") as f:
        assert f.attrs["patch_size_level0"] == 512
    with h5py.File(folder / "s19.h5", "r") as f:
        assert "patch_size_level0" not in f.attrs
    with h5py.File(folder / "s20.h5", "r") as f:
        assert f.attrs["patch_size_level0"] == 256


def _survival_config(cohort: Path, **data) -> object:
    return config_from_dict(
        {
            "data": {"manifest": str(cohort), "bags": str(cohort.parent / "bags"), **data},
            "task": "survival",
            "model": {"name": "abmil", "params": {}},
            "objective": {"name": "bag", "params": {}},
            "train": {"survival_bins": 3, "seed": 0},
            "split": {"scheme": "monte_carlo", "repeats": 1, "test": "manifest"},
        }
    )


def _survival_split(cohort: Path) -> tuple[FoldSplit, pd.DataFrame]:
    df = pd.read_csv(cohort, dtype={"slide_id": str, "case_id": str})
    cases = sorted(df["case_id"].unique())
    slides = {c: sorted(df.loc[df.case_id == c, "slide_id"]) for c in cases}
    split = FoldSplit(
        0,
        tuple(s for c in cases[:30] for s in slides[c]),
        tuple(s for c in cases[30:45] for s in slides[c]),
        tuple(s for c in cases[45:] for s in slides[c]),
    )
    return split, df


def test_survival_fold_data_patient_level_and_fraction(survival_cohort):
    split, df = _survival_split(survival_cohort)
    cases = sorted(df["case_id"].unique())
    per_case = df.groupby("case_id")["event"].first()
    for level in (None, True):
        data = fold_mod.load_fold_data(_survival_config(survival_cohort, patient_level=level),
                                       split, 0)  # fmt: skip
        assert [b.slide_id for b in data.train] == cases[:30]
        assert [b.slide_id for b in data.val] == cases[30:45]
        assert [b.slide_id for b in data.test] == cases[45:]
        assert data.n_classes == 3 and data.in_dim == data.train[0].features.shape[1]
    slides = fold_mod.load_fold_data(_survival_config(survival_cohort, patient_level=False),
                                     split, 0)  # fmt: skip
    assert [b.slide_id for b in slides.train] == list(split.train)
    assert [b.slide_id for b in slides.test] == list(split.test)
    half = fold_mod.load_fold_data(_survival_config(survival_cohort, train_fraction=0.5), split, 4)
    events = [int(per_case[c]) for c in cases[:30]]
    assert 0 < sum(events) < 30
    want = stratified_subsample(cases[:30], events, 0.5, 4)
    assert [b.slide_id for b in half.train] == want


def test_classification_fold_data(binary_cohort):
    config = _config(binary_cohort, data={"patient_level": True})
    data = fold_mod.load_fold_data(config, FoldSplit(0, TRAIN, VAL, TEST), 0)
    assert [b.slide_id for b in data.train] == list(TRAIN)
    assert [b.slide_id for b in data.val] == list(VAL)
    assert [b.slide_id for b in data.test] == list(TEST)
    labels = _labels(binary_cohort)
    assert [int(b.label) for b in data.test] == [labels[s] for s in TEST]
    assert data.n_classes == 1 and data.in_dim == 8
    assert data.manifest["slide_id"].tolist() == IDS


def test_fold_data_refuses_label_problems(tmp_path):
    manifest = tiny_cohort(tmp_path, IDS, ["0", "1", "7", "x"] + [i % 2 for i in range(20)])
    with pytest.raises(ValueError) as err:
        fold_mod.load_fold_data(_config(manifest), FoldSplit(0, TRAIN, VAL, TEST), 0)
    assert str(err.value) == (
        f"{manifest}: label(s) not among the allowed values 0, 1 (or normal/negative, "
        "tumor/tumour): line 4 (slide s02): '7'; line 5 (slide s03): 'x'; map text labels in "
        "the config, e.g. data.labels: {normal: 0, tumor: 1}; a cohort with more classes needs "
        "data.n_classes (now 2)"
    )


def test_rows_refuse_a_missing_prediction(binary_cohort):
    config = _config(binary_cohort)
    data = fold_mod.load_fold_data(config, FoldSplit(0, TRAIN, VAL, TEST), 0)
    pred = Prediction(TEST[0], np.array([0.0]), 0.1)
    rows = fold_mod._rows([pred], data.test[:1], "test", 3, "classification")
    assert rows == [{"fold": 3, "slide_id": TEST[0], "split": "test",
                     "label": int(data.test[0].label), "prob": 0.5}]  # fmt: skip
    with pytest.raises(ValueError):
        fold_mod._rows([pred], data.test[:2], "test", 0, "classification")


def test_objective_params_reach_the_objective(binary_cohort, tmp_path, fakes):
    config = _config(
        binary_cohort,
        objective={"name": "bag", "params": {"survival_alpha": 0.25}},
        train={"device": "cpu:0"},
    )
    fold_mod.run_fold(config, FoldSplit(0, TRAIN, VAL, TEST), str(tmp_path))
    assert fakes[1][3] == "cpu:0" and fakes[2][3] == "cpu:0"  # the configured device
    objective = fakes[0][7]
    assert type(objective).__name__ == "BagObjective" and objective.survival_alpha == 0.25


def test_run_fold_shows_the_epoch_bar(binary_cohort, tmp_path, fakes, monkeypatch):
    out = _terminal(monkeypatch, True)
    config = _config(binary_cohort, train={"max_epochs": 5}, output={"attention": False})
    fold_mod.run_fold(config, FoldSplit(2, TRAIN, VAL, TEST), str(tmp_path))
    text = out.getvalue()
    last = text[text.rindex("fold 2 epoch") :]
    assert "3/5" in last and "val loss 0.3000" in last and "best epoch 2" in last


def test_annotated_fraction_uses_the_fold_seed(tmp_path):
    """Which training positives keep their lesion labels is drawn with the fold's seed: 6 of
    12 annotated positives (924 possible draws)."""
    from histomil.training.data import load_cohort_bags, prepare_train_bags

    manifest = tiny_cohort(tmp_path, IDS, [1] * 12 + [i % 2 for i in range(12)])
    config = _config(manifest, data={"annotated_fraction": 0.5})
    data = fold_mod.load_fold_data(config, FoldSplit(0, TRAIN, VAL, TEST), 11)
    bags = load_cohort_bags(pd.read_csv(manifest, dtype={"slide_id": str}), config.data.bags)
    want = prepare_train_bags([bags[s] for s in TRAIN], config.data, 11)
    kept = [b.slide_id for b in data.train if b.has_lesion_labels and int(b.label)]
    assert kept == [b.slide_id for b in want if b.has_lesion_labels and int(b.label)]
    assert len(kept) == 6


def test_fold_data_with_one_training_bag(binary_cohort):
    data = fold_mod.load_fold_data(_config(binary_cohort), FoldSplit(0, ("s00",), VAL, TEST), 0)
    assert [b.slide_id for b in data.train] == ["s00"] and data.in_dim == 8
