"""The Python API (`from histomil import preprocess, label, extract, train, heatmap`) and the
checks that stop a pointless command before it starts (issue 19)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

import histomil
from histomil.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_import_histomil_stays_light():
    code = (
        "import json, sys, histomil\n"
        "light = 'histomil.api' not in sys.modules and 'pandas' not in sys.modules\n"
        "from histomil import preprocess, label, extract, train, heatmap\n"
        "print(json.dumps({'light': light, 'torch': 'torch' in sys.modules}))\n"
    )
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"light": True, "torch": False}


def test_api_names_and_errors():
    from histomil import api

    for name in ("preprocess", "label", "extract", "train", "heatmap"):
        assert getattr(histomil, name) is getattr(api, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        histomil.nope  # noqa: B018


@pytest.fixture
def job(tmp_path):
    """One preprocessed synthetic positive slide (API), and its GeoJSON annotation."""
    from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides

    manifest = make_synthetic_slides(
        tmp_path / "s", 1, seed=3, config=SlideSynthConfig(size=(800, 600)), positive_fraction=1.0
    )
    pre = histomil.preprocess(manifest, tmp_path / "job", patch_size=64)
    ann = next((tmp_path / "s" / "slides").glob("*.geojson"))
    return pre, ann


def test_preprocess_result(job):
    pre, _ = job
    assert pre.counts == {"ok": 1} and pre.n_slides == 1 and pre.n_patches > 10
    assert pre.status_file.is_file() and pre.patches_dir == pre.out / "patches"
    with pytest.raises(AttributeError):
        pre.out = Path("x")  # frozen


def test_label_single_annotation_file_and_out_folder(job, tmp_path):
    """`annotations` may be one file; `out` receives label.csv instead of the patches folder."""
    pre, ann = job
    lab = histomil.label(pre.patches_dir, ann, tmp_path / "labels")
    assert lab.out == tmp_path / "labels" and (tmp_path / "labels" / "label.csv").is_file()
    assert not (pre.patches_dir / "label.csv").exists()
    assert lab.counts == {"ok": 1} and lab.n_lesion > 0
    assert bool(lab.table.loc[0, "annotated"])


def test_label_rejects_an_annotation_file_of_no_slide(job, tmp_path):
    pre, ann = job
    other = tmp_path / "other.geojson"
    other.write_text(ann.read_text())
    (pre.patches_dir / "second.h5").write_bytes((next(pre.patches_dir.glob("*.h5"))).read_bytes())
    with pytest.raises(ValueError, match="matches no slide id"):
        histomil.label(pre.patches_dir, other, tmp_path / "labels")


def test_missing_weights_stop_extract_before_any_slide(job, tmp_path):
    """Missing weights were reported per slide after the progress bar ran; now once, first."""
    pre, _ = job
    out = tmp_path / "feat"
    res = runner.invoke(app, ["extract", "--patches", str(pre.patches_dir), "--out", str(out),
                              "--encoder", "timm:resnet18", "--weights",
                              str(tmp_path / "missing.pth")])  # fmt: skip
    assert res.exit_code == 1
    assert res.output.count("missing.pth") == 1 and "does not exist" in res.output
    assert not (out / "extract.csv").exists() and not (out / "bags").exists()


def test_model_parameter_typo_stops_train_before_any_fold(tmp_path):
    """A typo in model.params was reported once per fold, after each fold started."""
    from histomil.synth.bags import generate_bags

    manifest = generate_bags(tmp_path / "bags", "tiny", seed=1)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{manifest: {manifest}, bags: {manifest.parent / 'bags'}}}\n"
        "model: {name: abmil, params: {hiden_dim: 8}}\n"
        "split: {repeats: 2}\n"
    )
    res = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert res.exit_code == 1
    assert res.output.count("hiden_dim") == 1 and "accepted:" in res.output
    assert not (tmp_path / "run" / "folds").exists()


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="slide input .*nope.svs does not exist"):
        histomil.preprocess(tmp_path / "nope.svs", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="training config"):
        histomil.train(tmp_path / "nope.yaml", tmp_path / "run")
    config = tmp_path / "c.yaml"
    config.write_text("data: {manifest: m.csv, bags: bags/}\n")
    with pytest.raises(FileNotFoundError, match=r"manifest \(data.manifest\) .*m.csv"):
        histomil.train(config, tmp_path / "run")
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


def test_extract_precision_uses_the_yaml_spelling(job, tmp_path):
    pre, _ = job
    ext = histomil.extract(pre.patches_dir, tmp_path / "f", encoder="timm:resnet18",
                           random_weights=True, readers=0, batch_size=32, precision="float32",
                           dtype="float16")  # fmt: skip
    assert ext.counts == {"done": 1}
    with h5py.File(next(ext.bags_dir.glob("*.h5"))) as f:
        assert f["features"].dtype == "float16"
    with pytest.warns(FutureWarning, match="'fp32' is deprecated"):
        histomil.extract(pre.patches_dir, tmp_path / "f", encoder="timm:resnet18",
                         random_weights=True, readers=0, precision="fp32",
                         dtype="float16")  # fmt: skip
