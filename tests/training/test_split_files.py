"""CLAM split files (splits_<k>.csv): read as fixed folds, written by every run."""

from __future__ import annotations

import pandas as pd
import pytest

from histomil.training.split_files import (
    SplitFileError,
    read_split_file,
    read_split_folder,
    write_split_files,
)
from histomil.training.splits import FoldSplit


def _clam_file(path, train, val, test):
    """As CLAM's save_splits writes it: columns side by side, padded, with the index column."""
    cols = [
        pd.Series(v, name=n, dtype=object)
        for n, v in zip(("train", "val", "test"), (train, val, test), strict=True)
    ]
    pd.concat(cols, axis=1).to_csv(path)


def test_clam_file_is_read_with_ids_as_strings(tmp_path):
    _clam_file(tmp_path / "splits_0.csv", ["00008", "1.110", "NA"], ["00009"], ["0010", "x"])
    fold = read_split_file(tmp_path / "splits_0.csv", 0)
    assert fold == FoldSplit(0, ("00008", "1.110", "NA"), ("00009",), ("0010", "x"))


def test_written_files_read_back_and_the_way_clam_reads_them(tmp_path):
    folds = [
        FoldSplit(0, ("a", "b", "c"), ("d",), ("e", "f")),
        FoldSplit(1, ("a", "d"), ("b",), ()),
    ]
    write_split_files(folds, tmp_path)
    manifest = pd.DataFrame({"slide_id": list("abcdef")})
    assert read_split_folder(tmp_path, manifest) == folds
    clam = pd.read_csv(tmp_path / "splits_0.csv", dtype=str)  # return_splits(from_id=False)
    assert clam["train"].dropna().tolist() == ["a", "b", "c"]
    assert clam["test"].dropna().tolist() == ["e", "f"]


def test_bad_split_files_are_refused_with_the_file_named(tmp_path):
    manifest = pd.DataFrame({"slide_id": list("abcd")})
    _clam_file(tmp_path / "splits_0.csv", ["a", "b"], ["b"], ["c"])
    with pytest.raises(SplitFileError, match="splits_0.csv: slide\\(s\\) in both train and val: b"):
        read_split_folder(tmp_path, manifest)
    _clam_file(tmp_path / "splits_0.csv", ["a", "z"], ["b"], ["c"])
    with pytest.raises(SplitFileError, match="not in the manifest: z"):
        read_split_folder(tmp_path, manifest)
    _clam_file(tmp_path / "splits_0.csv", ["a"], ["b"], ["c"])
    _clam_file(tmp_path / "splits_2.csv", ["a"], ["b"], ["c"])
    with pytest.raises(SplitFileError, match="without gaps"):
        read_split_folder(tmp_path, manifest)
    (tmp_path / "splits_2.csv").unlink()
    pd.DataFrame({"slide_id": ["a"]}).to_csv(tmp_path / "splits_1.csv", index=False)
    with pytest.raises(SplitFileError, match="no train, val, test column"):
        read_split_folder(tmp_path, manifest)


def test_config_scheme_files_gives_the_files_folds(tmp_path):
    from histomil.training.config import config_from_dict
    from histomil.training.splits import make_splits

    (tmp_path / "splits").mkdir()
    _clam_file(tmp_path / "splits" / "splits_0.csv", ["a", "b"], ["c"], ["d"])
    _clam_file(tmp_path / "splits" / "splits_1.csv", ["c", "d"], ["a"], ["b"])
    raw = {
        "data": {"manifest": "m.csv", "bags": "bags"},
        "split": {"scheme": "files", "dir": "splits"},
    }
    config = config_from_dict(raw, base_dir=tmp_path)
    assert config.split.dir == str((tmp_path / "splits").resolve()) and config.split.n_folds == 2
    df = pd.DataFrame({"slide_id": list("abcd"), "label": [0, 1, 0, 1]})
    folds = make_splits(df, config.split, 0, "classification")
    assert folds[1] == FoldSplit(1, ("c", "d"), ("a",), ("b",))
    with pytest.raises(ValueError, match="needs split.dir"):
        config_from_dict({**raw, "split": {"scheme": "files"}}, base_dir=tmp_path)


def test_run_with_clam_split_files_trains_those_folds_and_writes_them_back(small_cohort, tmp_path):
    from histomil._io import read_csv
    from histomil.training import train
    from tests.training.test_run import write_config

    manifest = read_csv(small_cohort)
    ids = manifest["slide_id"].astype(str).tolist()
    (tmp_path / "clam").mkdir()
    _clam_file(tmp_path / "clam" / "splits_0.csv", ids[:-8], ids[-8:-4], ids[-4:])
    cfg = write_config(
        tmp_path / "exp",
        small_cohort,
        split={"scheme": "files", "dir": str(tmp_path / "clam")},
        train={"max_epochs": 1, "warmup_epochs": 0, "patience": 1, "seed": 0, "threads": 1},
    )
    result = train(cfg, tmp_path / "out")
    written = read_split_file(result.run_dir / "splits" / "splits_0.csv", 0)
    assert written == read_split_file(tmp_path / "clam" / "splits_0.csv", 0)
    preds = result.predictions
    assert set(preds.loc[preds["split"] == "test", "slide_id"].astype(str)) == set(ids[-4:])
