"""The Ray executor against one local Ray instance (``ray.init(num_cpus=2)``) for the module.

Same outputs as the local executor (preprocess, label, train folds), failures isolated and
reported per task, and a rerun after an interrupted Ray run resumes from the finished outputs.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from histomil.executors import ExecutorConfig, Task, run_tasks

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

RAY = ExecutorConfig(executor="ray", workers=2)
LOCAL = ExecutorConfig(workers=1)


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """3 tiny synthetic slides (2 positive, with ASAP/GeoJSON annotations) and a manifest."""
    from histomil.synth.slides import SlideSynthConfig, make_synthetic_slides

    out = tmp_path_factory.mktemp("ray_slides")
    return make_synthetic_slides(
        out, 3, seed=3, config=SlideSynthConfig(size=(900, 700)), positive_fraction=0.67
    )


def _h5(path: Path) -> dict:
    """Every dataset and attribute of an HDF5 file (paths and versions excluded)."""
    out: dict = {}
    with h5py.File(path, "r") as f:
        for name, ds in f.items():
            out[name] = ds[()]
            # CLAM's coords attrs name the output folder, which differs between the two runs
            out.update({f"{name}.{k}": v for k, v in ds.attrs.items() if k != "save_path"})
        out.update({k: v for k, v in f.attrs.items() if k not in ("created", "slide_path")})
    return out


def _assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("*.h5"))
    assert names and names == sorted(p.name for p in b.glob("*.h5"))
    for name in names:
        x, y = _h5(a / name), _h5(b / name)
        assert x.keys() == y.keys(), name
        for key in x:
            np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]), err_msg=key)


def _preprocess(slides: Path, out: Path, executor: ExecutorConfig, **kw):
    from histomil.slides.preprocess import PreprocessConfig, preprocess_slides

    return preprocess_slides([slides], out, PreprocessConfig(patch_size=112), executor, **kw)


def test_preprocess_and_label_same_outputs_as_local(slides, tmp_path):
    from histomil.annotations.labelling import label_patches_dir

    tables = {}
    for name, executor in (("local", LOCAL), ("ray", RAY)):
        tables[name] = _preprocess(slides, tmp_path / name, executor)
        label_patches_dir(tmp_path / name / "patches", slides, executor=executor)
    assert (tables["ray"]["status"] == "ok").all() and len(tables["ray"]) == 3
    pd.testing.assert_series_equal(tables["local"]["n_patches"], tables["ray"]["n_patches"])
    _assert_same_files(tmp_path / "local" / "patches", tmp_path / "ray" / "patches")
    assert ray.is_initialized()  # run_tasks leaves an instance it did not start running


def test_failing_tasks_reported_others_finish():
    tasks = [
        Task("ok1", pow, {"base": 2, "exp": 3}),
        Task("raises", int, {"nope": 1}),
        Task("dies", functools.partial(os._exit, 3)),  # kills its Ray worker process
        Task("ok2", dict, {"z": 1}),
    ]
    seen = []
    results = run_tasks(tasks, RAY, on_result=seen.append)
    assert [r.key for r in results] == ["ok1", "raises", "dies", "ok2"]
    assert results[0].value == 8 and results[3].value == {"z": 1}
    assert not results[1].ok and results[1].error.startswith("TypeError")
    assert not results[2].ok and "ray task failed" in results[2].error
    assert len(seen) == 4


def test_failing_slide_isolated_in_a_ray_job(slides, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for tif in sorted((slides.parent / "slides").glob("*.tif*")):
        (folder / tif.name).symlink_to(tif)
    (folder / "corrupt.tiff").write_bytes(b"not a slide at all")
    table = _preprocess(folder, tmp_path / "out", RAY, skip_errors=True)
    status = dict(zip(table["slide_id"], table["status"], strict=True))
    assert status.pop("corrupt") == "error" and set(status.values()) == {"ok"}
    assert len(list((tmp_path / "out" / "patches").glob("*.h5"))) == 3


def test_resume_after_interrupted_ray_run(slides, tmp_path, monkeypatch):
    from histomil.slides import preprocess as pp

    def interrupted(tasks, executor, *, description, on_result):
        def stop_after_first(result):
            on_result(result)
            raise KeyboardInterrupt  # the driver is stopped after one finished slide

        return run_tasks(tasks, executor, description=description, on_result=stop_after_first)

    monkeypatch.setattr(pp, "run_tasks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _preprocess(slides, tmp_path / "ray", RAY)
    monkeypatch.undo()
    assert ray.is_initialized()
    status = pd.read_csv(tmp_path / "ray" / "preprocess.csv")
    finished = set(status.loc[status["status"] == "ok", "slide_id"])
    assert len(finished) >= 1
    for sid in finished:  # atomic writes: whatever finished is complete
        assert (tmp_path / "ray" / "patches" / f"{sid}.h5").is_file()
    table = _preprocess(slides, tmp_path / "ray", RAY)
    skipped = set(table.loc[table["status"] == "skipped", "slide_id"])
    assert finished <= skipped and set(table["status"]) <= {"ok", "skipped"}
    _preprocess(slides, tmp_path / "local", LOCAL)
    _assert_same_files(tmp_path / "local" / "patches", tmp_path / "ray" / "patches")


def test_train_folds_same_on_ray_as_local(tmp_path):
    import yaml

    from histomil.synth.bags import generate_bags
    from histomil.training import train

    manifest = generate_bags(tmp_path / "cohort", preset="tiny", seed=0, signal=5.0)
    config = {
        "data": {"manifest": str(manifest), "bags": str(manifest.parent / "bags")},
        "task": "classification",
        "model": {"name": "abmil", "params": {"hidden": 16, "attn_dim": 8}},
        "objective": {"name": "rank_induction"},
        "train": {"max_epochs": 2, "warmup_epochs": 1, "patience": 1, "seed": 0, "threads": 1},
        "split": {"scheme": "monte_carlo", "repeats": 2, "val_fraction": 0.25, "test": "manifest"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    local = train(path, tmp_path / "local", LOCAL)
    remote = train(path, tmp_path / "ray", RAY)
    assert len(remote.folds) == 2
    pd.testing.assert_frame_equal(local.predictions, remote.predictions)
    # resume: a rerun on Ray finds both folds finished and trains nothing
    again = train(path, tmp_path / "ray", RAY)
    pd.testing.assert_frame_equal(again.predictions, remote.predictions)


def _threads() -> dict:
    import torch

    return {"omp": os.environ.get("OMP_NUM_THREADS"), "torch": torch.get_num_threads()}


def test_cpus_per_task_sets_the_task_threads():
    """``--cpus-per-task 2`` reserves 2 CPUs per Ray task and its math libraries use 2 threads."""
    two = ExecutorConfig(executor="ray", workers=2, num_cpus_per_task=2.0)
    results = run_tasks([Task(key="t", fn=_threads)], two)
    assert results[0].ok, results[0].error
    assert results[0].value == {"omp": "2", "torch": 2}
    with pytest.raises(ValueError, match="CPUs per task"):
        ExecutorConfig(executor="ray", num_cpus_per_task=0)
