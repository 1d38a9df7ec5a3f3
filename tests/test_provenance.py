"""The shared provenance helper and the id-preserving CSV reader."""

from __future__ import annotations

import pandas as pd
import pytest

from histomil import provenance as prov
from histomil._io import read_csv, write_csv


def test_identity_follows_content_not_location(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 100)
    b = tmp_path / "sub" / "a.bin"
    b.parent.mkdir()
    b.write_bytes(b"x" * 100)
    assert prov.file_identity(a) == prov.file_identity(b)
    b.write_bytes(b"x" * 99 + b"y")
    assert prov.file_identity(a) != prov.file_identity(b)


def test_large_files_hash_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(prov, "FULL_HASH_LIMIT", 10)
    monkeypatch.setattr(prov, "_CHUNK", 4)
    f = tmp_path / "big.bin"
    f.write_bytes(b"abcdefghijklmnop")
    ident = prov.file_identity(f)
    assert "sha256-head-tail" in ident and ident["size"] == 16
    f.write_bytes(b"abcdefghijklmnoQ")  # last bytes change
    assert prov.file_identity(f) != ident


def test_decide_skip_compute_refuse(tmp_path):
    out = tmp_path / "out.h5"
    inp = tmp_path / "in.txt"
    inp.write_text("one")
    wanted = prov.record("extract", {"encoder": "resnet50_trunc", "mpp": 0.5}, {"patches": inp})
    assert prov.decide(out, None, wanted) == "compute"
    out.write_text("done")
    assert prov.decide(out, wanted, wanted) == "skip"
    changed = prov.record("extract", {"encoder": "uni", "mpp": 0.5}, {"patches": inp})
    with pytest.raises(prov.StaleOutputError, match=r'params.encoder: "resnet50_trunc" -> "uni"'):
        prov.decide(out, wanted, changed)
    assert prov.decide(out, wanted, changed, overwrite=True) == "compute"
    inp.write_text("two")
    moved = prov.record("extract", {"encoder": "resnet50_trunc", "mpp": 0.5}, {"patches": inp})
    with pytest.raises(prov.StaleOutputError, match="inputs.patches"):
        prov.decide(out, wanted, moved)
    with pytest.raises(prov.StaleOutputError, match="older histomil"):
        prov.decide(out, None, wanted)


def test_h5_and_json_round_trip(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = prov.record("preprocess", {"patch_size": 224, "levels": (1, 2)}, {"slide": None})
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        prov.write_h5(h5, p)
    assert prov.read_h5(tmp_path / "x.h5") == p
    prov.write_json(tmp_path / "p.json", p)
    assert prov.read_json(tmp_path / "p.json") == p
    assert prov.read_json(tmp_path / "missing.json") is None


@pytest.mark.parametrize(
    "ident", ["00008", "1.110", "1e5", "NA", "TCGA-XX-0001-01Z-00-DX1", "nan", ""]
)
def test_csv_ids_stay_strings(tmp_path, ident):
    df = pd.DataFrame({"slide_id": [ident, "other"], "case_id": ["007", "8"], "p": [0.5, None]})
    write_csv(df, tmp_path / "t.csv")
    back = read_csv(tmp_path / "t.csv")
    assert back["slide_id"].tolist() == [ident, "other"]
    assert back["case_id"].tolist() == ["007", "8"]
    assert back["p"].iloc[0] == 0.5 and pd.isna(back["p"].iloc[1])
