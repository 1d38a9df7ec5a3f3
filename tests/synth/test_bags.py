"""Synthetic CAMELYON-like bags: determinism, sizes, splits, lesion geometry, survival, CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from histomil.bags.io import load_bag
from histomil.manifest import read_manifest
from histomil.synth.bag_config import CAMELYON16_SPLITS, parse_override
from histomil.synth.bag_grid import Blob, overlap_fraction
from histomil.synth.bag_slide import SlideSpec, make_slide, make_world
from histomil.synth.bags import generate_bags, make_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return generate_bags(out, "tiny", seed=1)


@pytest.fixture(scope="module")
def survival(tmp_path_factory):
    out = tmp_path_factory.mktemp("surv")
    return generate_bags(out, "survival-small", seed=2, n_cases=50, patches_median=60,
                         patches_min=30, patches_max=100, feature_dim=8)  # fmt: skip


def test_camelyon16_preset_matches_paper_split():
    cfg = make_config("camelyon16")
    assert cfg.splits == CAMELYON16_SPLITS
    totals = {s: (p, n) for s, p, n in cfg.splits}
    assert sum(p + n for p, n in totals.values()) == 399
    assert totals["train"][0] + totals["val"][0] == 111  # positive train+val
    assert totals["train"][1] + totals["val"][1] == 159
    assert totals["test"] == (49, 80)
    assert (cfg.feature_dim, cfg.patches_median, cfg.patch_size_level0) == (1024, 8000, 448)


def test_manifest_splits_and_class_balance(tiny):
    df = read_manifest(tiny, required=("slide_id", "label", "split"))
    cfg = make_config("tiny")
    for split, n_pos, n_neg in cfg.splits:
        part = df[df["split"] == split]
        assert (int((part["label"] == 1).sum()), int((part["label"] == 0).sum())) == (n_pos, n_neg)
    for sid in df["slide_id"]:
        assert (tiny.parent / "bags" / f"{sid}.h5").is_file()
    meta = json.loads((tiny.parent / "synth.json").read_text())
    assert meta["preset"] == "tiny" and meta["seed"] == 1
    assert meta["config"]["feature_dim"] == cfg.feature_dim
    assert meta["bytes_on_disk"] > 0


def test_bags_consistent_labels_overlap_target(tiny):
    df = pd.read_csv(tiny)
    cfg = make_config("tiny")
    for row in df.itertuples():
        bag = load_bag(tiny.parent / "bags" / f"{row.slide_id}.h5")
        n = bag.n_instances
        assert cfg.patches_min <= n <= cfg.patches_max
        assert bag.features.shape == (n, cfg.feature_dim)
        assert bag.coords.dtype == np.int64 and (bag.coords % cfg.patch_size_level0 == 0).all()
        assert len({tuple(c) for c in bag.coords}) == n  # no duplicate patches
        assert bag.attrs["patch_size_level0"] == 448 and bag.attrs["level0_mpp"] == 0.243
        assert ((bag.tissue >= 0.05) & (bag.tissue <= 1)).all()
        np.testing.assert_array_equal(bag.patch_labels, (bag.overlap > 0.05).astype(np.int8))
        if row.label == 1:
            assert bag.patch_labels.sum() >= 1
            assert bag.attn_target.sum() == pytest.approx(1.0, abs=1e-5)
            assert ((bag.attn_target > 0) == (bag.overlap > 0)).all()
        else:
            assert bag.patch_labels.sum() == 0 and bag.attn_target.sum() == 0
        with h5py.File(tiny.parent / "bags" / f"{row.slide_id}.h5") as f:
            truth = f["true_overlap"][:]
            assert f["distractor"][:].dtype == np.int8
        # noise-free annotation: annotated overlap equals the truth
        np.testing.assert_allclose(bag.overlap, truth)


def test_deterministic_and_slide_independent(tmp_path):
    a = generate_bags(tmp_path / "a", "tiny", seed=5)
    b = generate_bags(tmp_path / "b", "tiny", seed=5)
    c = generate_bags(tmp_path / "c", "tiny", seed=6)
    # fewer slides in the cohort: the common slide is still identical
    d = generate_bags(tmp_path / "d", "tiny", seed=5, splits=(("train", 3, 3),))
    pd.testing.assert_frame_equal(pd.read_csv(a), pd.read_csv(b))
    fa = load_bag(a.parent / "bags" / "train_001.h5").features
    assert np.array_equal(fa, load_bag(b.parent / "bags" / "train_001.h5").features)
    assert np.array_equal(fa, load_bag(d.parent / "bags" / "train_001.h5").features)
    fc = load_bag(c.parent / "bags" / "train_001.h5").features
    assert fa.shape != fc.shape or not np.array_equal(fa, fc)


def test_lesion_share_and_clustering():
    cfg = make_config("camelyon16", patches_median=3000, patches_min=1000, feature_dim=8)
    world = make_world(cfg, 0)
    shares, neighbours = [], []
    for i in range(12):
        arr = make_slide(cfg, world, SlideSpec(f"s{i}", 1, "train"), seed=0)
        lesion = arr.patch_labels == 1
        shares.append(lesion.mean())
        cells = {tuple(c) for c in arr.coords[lesion] // cfg.patch_size_level0}
        near = [
            any((x + dx, y + dy) in cells for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))
            for x, y in cells
        ]
        neighbours.append(np.mean(near))
    assert 0.001 < np.median(shares) < 0.06  # a few percent at most
    assert min(shares) < 0.01  # some slides with a handful of patches
    assert np.mean(neighbours) > 0.7  # lesion patches are spatially clustered


def test_distractors_in_both_classes_and_signal_direction():
    cfg = make_config("tiny", patches_median=300, patches_min=300, patches_max=300)
    world = make_world(cfg, 0)
    pos = make_slide(cfg, world, SlideSpec("p", 1, "train"), seed=0)
    neg = make_slide(cfg, world, SlideSpec("n", 0, "train"), seed=0)
    assert pos.distractor.sum() > 0 and neg.distractor.sum() > 0
    proj = pos.features @ world.lesion_dir
    clean = (pos.distractor == 0) & (pos.true_overlap == 0)
    assert proj[pos.true_overlap > 0.5].mean() > proj[clean].mean() + 1.0
    # distractors are salient (large shift) in negatives too
    norms = np.linalg.norm(neg.features - neg.features[neg.distractor == 0].mean(0), axis=1)
    assert norms[neg.distractor == 1].mean() > norms[neg.distractor == 0].mean()


def test_annotation_noise_and_unannotated_slides():
    cfg = make_config("tiny", patches_median=300, patches_min=300, lesion_share_median=0.2,
                      annotation_jitter_px=300.0)  # fmt: skip
    world = make_world(cfg, 0)
    arr = make_slide(cfg, world, SlideSpec("p", 1, "train"), seed=0)
    assert not np.allclose(arr.overlap, arr.true_overlap)
    missed = make_config("tiny", annotation_miss_prob=1.0)
    arr = make_slide(missed, make_world(missed, 0), SlideSpec("p", 1, "train"), seed=0)
    assert arr.true_overlap.sum() > 0 and arr.patch_labels.sum() == 0
    unann = make_slide(cfg, world, SlideSpec("p", 1, "train", annotated=False), seed=0)
    assert (unann.patch_labels == -1).all() and np.isnan(unann.overlap).all()
    assert unann.attn_target.sum() == 0


def test_overlap_fraction_of_a_disc():
    px = 100
    coords = np.array([[0, 0], [100, 0], [1000, 1000]])
    blob = Blob(100.0, 50.0, 1000.0, np.zeros(6), np.zeros(6))
    ov = overlap_fraction(coords, px, [blob])
    np.testing.assert_allclose(ov, [1.0, 1.0, 0.0])
    small = Blob(50.0, 50.0, 25.0, np.zeros(6), np.zeros(6))  # area pi*625 of 10000
    assert overlap_fraction(coords[:1], px, [small])[0] == pytest.approx(0.196, abs=0.06)


def test_survival_preset(survival):
    df = read_manifest(survival, required=("slide_id", "label", "case_id", "time", "event"))
    per_case = df.groupby("case_id")
    assert per_case.size().between(1, 3).all()
    assert (per_case["time"].nunique() == 1).all() and (per_case["split"].nunique() == 1).all()
    cases = per_case.first()
    assert 0.25 <= 1 - cases["event"].mean() <= 0.55
    assert (cases["time"] > 0).all() and set(df["label"]) <= {0, 1, 2, 3}
    meta = json.loads((survival.parent / "synth.json").read_text())
    assert meta["stats"]["n_cases"] == 50


def test_survival_hazard_depends_on_lesion_content():
    from histomil.synth.survival import survival_cohort

    cfg = make_config("survival", n_cases=400, censoring=0.0, max_time=1e9)
    _, cases = survival_cohort(cfg, seed=0)
    risk = np.array([c["risk"] for c in cases.values()])
    t = np.array([c["time"] for c in cases.values()])
    share = np.array([c["lesion_share"] for c in cases.values()])
    from scipy.stats import spearmanr

    assert spearmanr(risk, t).statistic < -0.3
    assert spearmanr(share, t).statistic < -0.1


def test_config_errors_and_overrides():
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("nope")
    with pytest.raises(ValueError, match="unknown synthetic-bag setting"):
        make_config("tiny", sgnal=1.0)
    with pytest.raises(ValueError, match="dtype"):
        make_config("tiny", dtype="int8")
    assert parse_override("signal=1.5") == ("signal", 1.5)
    assert parse_override("write_annotations=false") == ("write_annotations", False)
    assert parse_override("slides_per_case=[1, 2]") == ("slides_per_case", (1, 2))


def test_cli(tmp_path):
    from typer.testing import CliRunner

    from histomil.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["synth", "bags", "--out", str(out), "--preset", "tiny",
                                   "--seed", "4", "--feature-dim", "6", "--set", "signal=2.5"])  # fmt: skip
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "synth.json").read_text())
    assert meta["config"]["feature_dim"] == 6 and meta["config"]["signal"] == 2.5
    bad = CliRunner().invoke(app, ["synth", "bags", "--out", str(out), "--set", "nope=1"])
    assert bad.exit_code != 0 and "unknown synthetic-bag setting" in bad.output


def test_bench_preset_is_the_small_cohort_with_more_slides():
    """camelyon16-bench: camelyon16-small's bags and features, 72 training / 42 test slides,
    the tuned signal 4 (docs/synthetic.md)."""
    small, bench = make_config("camelyon16-small"), make_config("camelyon16-bench")
    assert bench.splits == (("train", 30, 42), ("test", 16, 26))
    assert bench.signal == 4.0
    assert (bench.patches_median, bench.feature_dim) == (small.patches_median, small.feature_dim)
