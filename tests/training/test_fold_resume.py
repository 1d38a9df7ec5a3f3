"""An interrupted fold resumes after its last finished epoch (``folds/<k>/resume.pt``) and ends
exactly as an uninterrupted fold; a state made with other settings, or unreadable, is never
resumed (the fold starts from epoch 0)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import histomil.training.fold as fold_mod
from histomil.executors import BatchError
from histomil.training import train
from histomil.training.config import config_from_dict

from ._tiny import tiny_cohort, tiny_config

TRAIN = {"max_epochs": 4, "warmup_epochs": 4, "patience": 9, "seed": 0, "threads": 1}


def _config(tmp_path, **train_over):
    manifest = tiny_cohort(tmp_path / "c")
    raw = tiny_config(manifest, split={"repeats": 1}, train={**TRAIN, **train_over})
    raw["model"] = {"name": "dtfd", "params": {"hidden": 16, "attn_dim": 8, "dropout": 0.25}}
    return config_from_dict(raw, base_dir=str(tmp_path))


def _spy(monkeypatch, stop_after: int | None = None, only: str | None = None):
    """Record the epoch each fit resumes from; optionally die after saving epoch ``stop_after``
    (of the fits whose objective is named ``only``, when given)."""
    from histomil.training.trainer import fit as real_fit

    starts = []

    def fit(*args, resume=None, on_checkpoint=None, **kw):
        name = args[1].name
        starts.append(None if resume is None else resume["epoch"])

        def keep(state):
            on_checkpoint(state)
            if stop_after is not None and state["epoch"] == stop_after and only in (None, name):
                raise RuntimeError("killed")

        return real_fit(*args, resume=resume, on_checkpoint=keep, **kw)

    monkeypatch.setattr(fold_mod, "fit", fit)
    return starts


def _outputs(run):
    fold = run / "folds" / "0"
    ckpt = torch.load(fold / "checkpoint.pt", weights_only=False)
    return (
        pd.read_csv(fold / "history.csv"),
        pd.read_csv(fold / "predictions.csv"),
        ckpt["model"],
        ckpt["best_epoch"],
    )


def test_interrupted_fold_resumes_and_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    config = _config(tmp_path)
    whole = _outputs(train(config, tmp_path / "whole").run_dir)
    starts = _spy(monkeypatch, stop_after=1)
    with pytest.raises(BatchError, match="killed"):
        train(config, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "folds" / "0" / "resume.pt", weights_only=False)
    assert saved["state"]["epoch"] == 1 and len(saved["state"]["history"]) == 2
    # the model's own generator (DTFD's pseudo-bag split) is part of the state
    assert any(k.endswith(":_train_generator") for k in saved["state"]["generators"]["model"])
    starts = _spy(monkeypatch)
    train(config, tmp_path / "run")
    assert starts == [1]  # resumed after epoch 1, not retrained
    got = _outputs(tmp_path / "run")
    pd.testing.assert_frame_equal(got[0], whole[0])
    pd.testing.assert_frame_equal(got[1], whole[1])
    assert got[3] == whole[3]
    for key, value in whole[2].items():
        assert torch.equal(got[2][key], value), key
    assert not (tmp_path / "run" / "folds" / "0" / "resume.pt").exists()


def test_state_from_other_settings_is_not_resumed(tmp_path, monkeypatch, caplog):
    _spy(monkeypatch, stop_after=1)
    with pytest.raises(BatchError):
        train(_config(tmp_path, lr=1e-2), tmp_path / "run")
    # no fold finished, so another config takes the folder over; its fold starts at epoch 0
    other = _config(tmp_path, lr=1e-3)
    starts = _spy(monkeypatch)
    train(other, tmp_path / "run")
    assert starts == [None]
    assert "made with other settings or inputs" in caplog.text
    monkeypatch.undo()
    fresh = _outputs(train(other, tmp_path / "fresh").run_dir)
    pd.testing.assert_frame_equal(_outputs(tmp_path / "run")[0], fresh[0])


def test_unreadable_state_starts_the_fold_from_epoch_0(tmp_path, monkeypatch, caplog):
    config = _config(tmp_path)
    _spy(monkeypatch, stop_after=0)
    with pytest.raises(BatchError):
        train(config, tmp_path / "run")
    (tmp_path / "run" / "folds" / "0" / "resume.pt").write_bytes(b"torn")
    starts = _spy(monkeypatch)
    train(config, tmp_path / "run")
    assert starts == [None] and "cannot be read" in caplog.text


def test_interrupted_mhim_fold_resumes_with_its_teacher_and_generator(tmp_path, monkeypatch):
    """MHIM-v2's state between epochs (EMA teacher, recycle network, mask generator) is
    restored: the resumed fold equals an uninterrupted one, and its baseline is not retrained."""
    manifest = tiny_cohort(tmp_path / "c")
    raw = tiny_config(manifest, split={"repeats": 1}, train=TRAIN)
    raw["objective"] = {
        "name": "mhim_v2",
        "params": {"masking": {"beta_l": 0.5}, "recycle": {"heads": 2}},
    }
    config = config_from_dict(raw, base_dir=str(tmp_path))
    whole = _outputs(train(config, tmp_path / "whole").run_dir)
    _spy(monkeypatch, stop_after=2, only="mhim_v2")
    with pytest.raises(BatchError, match="killed"):
        train(config, tmp_path / "run")
    starts = _spy(monkeypatch)
    seen = []  # the baseline weights the resumed state is matched against

    def identity(cfg, split, run_dir, baseline):
        seen.append(baseline)
        return real_identity(cfg, split, run_dir, baseline)

    real_identity = fold_mod.resume_identity
    monkeypatch.setattr(fold_mod, "resume_identity", identity)
    train(config, tmp_path / "run")
    assert starts == [2]  # the baseline (finished) is loaded, the student resumes after epoch 2
    # the student's state is tied to its teacher's baseline: another baseline is not resumed
    (baseline,) = [b for b in seen if b is not None]
    assert len(seen) == 1 and set(baseline) >= {"fc.0.weight", "classifier.weight"}
    got = _outputs(tmp_path / "run")
    pd.testing.assert_frame_equal(got[0], whole[0])
    pd.testing.assert_frame_equal(got[1], whole[1])
    for key, value in whole[2].items():
        assert torch.equal(got[2][key], value), key


def test_resume_identity_changes_with_every_input_it_names(tmp_path, monkeypatch):
    """The identity a resume state must match: the run's provenance file, the config, the fold
    and its slide ids, the baseline's weights and the dropout mask stream (each change alone
    gives another identity)."""
    from histomil.training.split_files import FoldSplit

    config = _config(tmp_path)
    split = FoldSplit(0, ("a", "b"), ("c",), ("d",))
    run = tmp_path / "r"
    run.mkdir()
    base = {"w": torch.ones(2), "n": 3}

    def ident(cfg=config, sp=split, baseline=base):
        return fold_mod.resume_identity(cfg, sp, run, baseline)

    first = ident()
    assert ident() == first and len(first) == 64  # stable, a SHA-256
    (run / "provenance.json").write_text('{"manifest": "m1"}', encoding="utf-8")
    with_prov = ident()
    assert with_prov != first
    (run / "provenance.json").write_text('{"manifest": "m2"}', encoding="utf-8")
    assert ident() != with_prov  # what the provenance records decides, not only that it exists
    now = ident()
    others = [
        ident(cfg=_config(tmp_path, lr=1e-3)),
        ident(sp=FoldSplit(1, ("a", "b"), ("c",), ("d",))),
        ident(sp=FoldSplit(0, ("a", "e"), ("c",), ("d",))),
        ident(baseline={"w": torch.tensor([1.0, 2.0]), "n": 3}),
        ident(baseline={"w": torch.ones(2), "n": 4}),
        ident(baseline={"v": torch.ones(2), "n": 3}),
        ident(baseline=None),
    ]
    assert len({now, *others}) == len(others) + 1
    import histomil.nn.dropout as dropout_mod

    monkeypatch.setattr(dropout_mod, "MASK_STREAM", "another draw")
    assert ident() not in {now, *others}


def test_read_resume_state_returns_only_a_matching_state_and_says_why(tmp_path, caplog):
    path = tmp_path / "resume.pt"
    caplog.set_level("WARNING", logger=fold_mod.log.name)
    assert fold_mod.read_resume_state(path, "id") is None and not caplog.records  # no file
    path.write_bytes(b"torn")
    assert fold_mod.read_resume_state(path, "id") is None
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - whatever torch says about a torn file
        why = err
    assert caplog.records[-1].getMessage() == (
        f"{path} cannot be read ({why}): the fold starts from epoch 0"
    )
    other = f"{path} was made with other settings or inputs: the fold starts from epoch 0"
    for saved in ({"identity": "other", "state": {"epoch": 3}}, ["not", "a", "dict"]):
        torch.save(saved, path)
        assert fold_mod.read_resume_state(path, "id") is None
        assert caplog.records[-1].getMessage() == other
    torch.save({"identity": "id", "state": {"epoch": 3, "w": torch.ones(2)}}, path)
    state = fold_mod.read_resume_state(path, "id")
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.ones(2))
    assert (
        caplog.records[-1].getMessage() == f"{path}: resuming after epoch 3 of an interrupted run"
    )
