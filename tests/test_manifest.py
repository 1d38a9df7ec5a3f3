"""Manifest reading (issue 14): ids stay text, numeric columns are numbers or a clear error."""

from __future__ import annotations

import pytest

from histomil.manifest import ManifestError, read_manifest

ODD_IDS = ["00008", "1.110", "1e5", "NA", "TCGA-XX-0001-01Z-00-DX1"]


def test_ids_are_kept_exactly_as_written(tmp_path):
    path = tmp_path / "m.csv"
    lines = ["slide_id,case_id,label"] + [f"{sid},{sid},1" for sid in ODD_IDS] + ["x,,0"]
    path.write_text("\n".join(lines) + "\n")
    df = read_manifest(path)
    assert df["slide_id"].tolist() == [*ODD_IDS, "x"]
    assert df["case_id"].tolist()[:5] == ODD_IDS
    assert df["case_id"].iloc[5] is None  # an empty case id is missing, not the id ""


def test_decimal_comma_in_mpp_is_an_error_naming_file_line_and_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('slide_id,label,mpp\na,1,0.5\nb,0,"0,5"\n')
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    msg = str(info.value)
    assert str(path) in msg and "column mpp" in msg and "line 3: '0,5'" in msg
    assert "decimal point" in msg


def test_mpp_is_parsed_as_a_number_and_may_be_empty(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("slide_id,label,mpp\na,1,0.25\nb,0,\n")
    df = read_manifest(path)
    assert df["mpp"].iloc[0] == 0.25 and df["mpp"].isna().iloc[1]


def test_empty_slide_id_is_reported(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("slide_id,label\na,1\n,0\n")
    with pytest.raises(ManifestError, match=r"empty slide_id on line\(s\) \[3\]"):
        read_manifest(path)
