"""`extract --encoder NAME` end to end on the real slide, output layouts read the way CLAM and
TRIDENT read them, CLAM/TRIDENT coordinate files as input, and the early weights check."""

from __future__ import annotations

import warnings
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from histomil.bags import load_bag
from histomil.features import ExtractConfig, WeightsError, WeightsSpec, extract_dir, foundation
from histomil.features.foundation import SPECS
from tests.features.conftest import write_patch_file
from tests.features.test_foundation import published_state, small_model

SMALL = ExtractConfig(
    encoder="timm:resnet18",
    weights=WeightsSpec(random=True),
    batch_size=4,
    workers=0,
    precision="fp32",
    progress=False,
)


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights")
        yield


def _checkpoint(tmp_path, name: str, monkeypatch):
    """A depth-1 ``name`` (exact constructor otherwise) registered under its name, and its
    checkpoint in the published key layout."""
    spec = SPECS[name]
    monkeypatch.setitem(SPECS, name, replace(spec, vit={**spec.vit, "depth": 1}))
    model = small_model(name)
    path = tmp_path / f"{name}.bin"
    torch.save(published_state(name, model), path)
    return model, path


@pytest.mark.parametrize("name", sorted(SPECS))
def test_cli_extract_named_encoder_with_published_checkpoint(
    tmp_path, real_slide, name, monkeypatch
):
    from typer.testing import CliRunner

    from histomil.cli import app

    _, ckpt = _checkpoint(tmp_path, name, monkeypatch)
    patches = tmp_path / "patches"
    write_patch_file(patches, real_slide, n=2, patch_size=64)
    out = tmp_path / "out"
    args = ["extract", "--patches", str(patches), "--out", str(out), "--encoder", name]
    args += ["--weights", str(ckpt), "--workers", "0", "--precision", "fp32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    bag = load_bag(out / "bags" / "CMU-1-Small-Region.h5")
    spec = SPECS[name]
    assert bag.features.shape == (2, spec.feature_dim) and np.isfinite(bag.features).all()
    a = bag.attrs
    assert a["encoder"] == name and a["encoder_output"] == spec.output
    assert a["encoder_architecture"].startswith(spec.architecture)
    assert a["encoder_input_size"] == spec.input_size and a["encoder_resize"] == spec.resize
    assert a["encoder_interpolation"] == spec.interpolation and a["encoder_card"] == spec.card
    assert a["encoder_mean"] == ",".join(repr(float(v)) for v in spec.mean)
    assert a["encoder_weights"].endswith(
        __import__("histomil.features.weights", fromlist=["x"]).sha256_file(ckpt)
    )


def test_gigapath_patches_are_resized_cropped_and_normalised_as_the_card_says(
    tmp_path, real_slide, monkeypatch
):
    """Resize(256, bicubic) + CenterCrop(224) + ImageNet normalisation, then the model."""
    import torch.nn.functional as F

    from histomil.features.patches import PatchDataset, read_patch_file

    model, ckpt = _checkpoint(tmp_path, "gigapath", monkeypatch)
    patches = tmp_path / "patches"
    write_patch_file(patches, real_slide, n=2, patch_size=64)
    config = replace(SMALL, encoder="gigapath", weights=WeightsSpec(path=ckpt))
    extract_dir(patches, tmp_path / "out", config)
    got = load_bag(tmp_path / "out" / "bags" / "CMU-1-Small-Region.h5").features
    pf = read_patch_file(patches / "CMU-1-Small-Region.h5")
    ds = PatchDataset(pf.slide_path, pf.coords, pf.tile_spec(), pf.attrs["level0_mpp"])
    x = torch.stack([ds[i] for i in range(len(ds))]).float()
    x = F.interpolate(x, size=(256, 256), mode="bicubic", antialias=True).clamp(0, 255)
    x = x[..., 16:240, 16:240] / 255.0
    mean, std = torch.tensor(SPECS["gigapath"].mean), torch.tensor(SPECS["gigapath"].std)
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_missing_checkpoint_fails_before_any_slide_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HISTOMIL_WEIGHTS_UNI", raising=False)
    monkeypatch.delenv("HISTOMIL_WEIGHTS_FILE", raising=False)
    patches = tmp_path / "patches"
    patches.mkdir()
    with h5py.File(patches / "s1.h5", "w") as f:  # its slide does not exist
        f["coords"] = np.zeros((1, 2), dtype=np.int64)
        f.attrs.update(slide_path="/nonexistent.svs")
    with pytest.raises(WeightsError, match="huggingface.co/MahmoodLab/UNI"):
        extract_dir(patches, tmp_path / "out", replace(SMALL, encoder="uni", weights=WeightsSpec()))
    assert not (tmp_path / "out" / "extract.csv").exists()


def test_clam_layout_is_read_as_clam_reads_it(tmp_path, patch_dir):
    """CLAM's Generic_MIL_Dataset reads pt_files/<id>.pt (torch.load) or h5_files/<id>.h5
    (['features'][:], ['coords'][:]); Whole_Slide_Bag_FP reads patch_level/patch_size on coords."""
    out = tmp_path / "clam"
    extract_dir(patch_dir, out, replace(SMALL, layout="clam"))
    with h5py.File(out / "h5_files" / "CMU-1-Small-Region.h5", "r") as f:
        features, coords = f["features"][:], f["coords"][:]
        attrs = dict(f["coords"].attrs)
    assert features.shape == (6, 512) and coords.shape == (6, 2)
    assert attrs["patch_level"] == 0 and attrs["patch_size"] == 64
    assert tuple(attrs["downsample"]) == (1.0, 1.0) and attrs["name"] == "CMU-1-Small-Region"
    pt = torch.load(out / "pt_files" / "CMU-1-Small-Region.pt")
    np.testing.assert_array_equal(pt.numpy(), features)
    assert not (out / "bags").exists()


def test_trident_layout_is_read_as_trident_reads_it(tmp_path, patch_dir):
    """TRIDENT: features_<encoder>/<id>.h5; coords attrs as IO.coords_to_h5 writes them, with
    patch_size_level0 = patch_size * level0_magnification / target_magnification."""
    from histomil.bags import load_cohort

    out = tmp_path / "trident"
    extract_dir(patch_dir, out, replace(SMALL, layout="trident"))
    path = out / "features_timm-resnet18" / "CMU-1-Small-Region.h5"
    with h5py.File(path, "r") as f:
        features, coords = f["features"][:], f["coords"][:]
        c, fa = dict(f["coords"].attrs), dict(f["features"].attrs)
    assert features.shape == (6, 512) and coords.shape == (6, 2)
    assert fa["encoder"] == "timm:resnet18" and fa["name"] == "CMU-1-Small-Region"
    size0 = c["patch_size"] * c["level0_magnification"] / c["target_magnification"]
    assert c["patch_size_level0"] == round(size0) == 64 and c["overlap"] == 0
    import pandas as pd

    cohort = load_cohort(pd.DataFrame({"slide_id": ["CMU-1-Small-Region"], "label": [1]}), out)
    np.testing.assert_allclose(cohort["CMU-1-Small-Region"].features.numpy(), features)


def test_clam_and_trident_coordinate_files_are_accepted_as_input(tmp_path, real_slide):
    """A CLAM patches/<id>.h5 (64 px at level 0, resized to 224 as CLAM does) and a TRIDENT
    <id>_patches.h5 give the features of our patch file with the same geometry."""
    from histomil.features.patches import PatchFileError, read_patch_file
    from histomil.slides import open_slide

    ours64 = write_patch_file(tmp_path / "ours64", real_slide, n=3, patch_size=64)
    with h5py.File(ours64, "r") as f:
        coords = f["coords"][:]
    with open_slide(real_slide) as s:
        mag0 = 10.0 / float(s.mpp)
    clam, trident = tmp_path / "clam" / "patches", tmp_path / "trident" / "patches"
    for folder, name, attrs in (
        (clam, "CMU-1-Small-Region.h5", {"patch_size": 64, "patch_level": 0}),
        (
            trident,
            "CMU-1-Small-Region_patches.h5",
            {
                "patch_size": 64,
                "patch_size_level0": 64,
                "level0_magnification": mag0,
                "target_magnification": mag0,
                "name": "CMU-1-Small-Region",
            },
        ),
    ):
        folder.mkdir(parents=True)
        with h5py.File(folder / name, "w") as f:
            f["coords"] = coords
            f["coords"].attrs.update(attrs)
    with pytest.raises(PatchFileError, match="CLAM coordinate file.*--slides"):
        read_patch_file(clam / "CMU-1-Small-Region.h5")
    pf = read_patch_file(clam / "CMU-1-Small-Region.h5", real_slide.parent)
    assert pf.tile_spec().patch_size == 224 and pf.tile_spec().read_size == 64

    config = replace(SMALL, slides_dir=str(real_slide.parent))
    extract_dir(ours64.parent, tmp_path / "o64", config)
    extract_dir(trident, tmp_path / "ot", config)
    extract_dir(clam, tmp_path / "oc", config)
    want = load_bag(tmp_path / "o64" / "bags" / "CMU-1-Small-Region.h5").features
    got_t = load_bag(tmp_path / "ot" / "bags" / "CMU-1-Small-Region.h5").features
    np.testing.assert_allclose(got_t, want, rtol=1e-5, atol=1e-5)
    ours224 = tmp_path / "ours224" / "CMU-1-Small-Region.h5"
    write_patch_file(ours224.parent, real_slide, n=3, patch_size=64)
    with h5py.File(ours224, "a") as f:  # 64 level-0 px resized to 224, as CLAM does
        f.attrs.update(patch_size=224, target_mpp=f.attrs["level0_mpp"] * 64 / 224)
    extract_dir(ours224.parent, tmp_path / "o224", config)
    want224 = load_bag(tmp_path / "o224" / "bags" / "CMU-1-Small-Region.h5").features
    got_c = load_bag(tmp_path / "oc" / "bags" / "CMU-1-Small-Region.h5").features
    np.testing.assert_allclose(got_c, want224, rtol=1e-5, atol=1e-5)


def test_preprocess_patch_file_carries_clam_coords_attributes(tmp_path, real_slide):
    """CLAM's Whole_Slide_Bag_FP reads coords.attrs patch_level/patch_size; TRIDENT falls back
    to that CLAM reader when level0/target magnification are absent from coords."""
    from histomil.slides.preprocess import PreprocessConfig, SlideInput, preprocess_slide

    slide = SlideInput("CMU-1-Small-Region", real_slide)
    preprocess_slide(slide, tmp_path, PreprocessConfig(patch_size=224, target_mpp=2.0))
    with h5py.File(tmp_path / "patches" / "CMU-1-Small-Region.h5", "r") as f:
        c = dict(f["coords"].attrs)
        size0 = int(f.attrs["patch_size_level0"])
        dims = (int(f.attrs["level0_width"]), int(f.attrs["level0_height"]))
    assert c["patch_level"] == 0 and c["patch_size"] == size0
    assert tuple(c["downsample"]) == (1.0, 1.0) and tuple(c["level_dim"]) == dims
    assert c["name"] == "CMU-1-Small-Region" and "level0_magnification" not in c


def test_load_cohort_refuses_bags_of_two_encoders(tmp_path):
    import pandas as pd

    from histomil.bags import BagError, load_cohort, write_bag

    for sid, enc in (("a", "uni"), ("b", "virchow2"), ("c", "uni")):
        write_bag(
            tmp_path / "bags" / f"{sid}.h5",
            np.ones((2, 4)),
            np.zeros((2, 2)),
            attrs={"encoder": enc},
        )
    manifest = pd.DataFrame({"slide_id": ["a", "b", "c"], "label": [0, 1, 0]})
    with pytest.raises(BagError, match="different encoders.*uni \\(2: a, c\\); virchow2"):
        load_cohort(manifest, tmp_path)
    assert len(load_cohort(manifest[manifest.slide_id != "b"], tmp_path)) == 2


def test_named_foundation_module_lists_what_is_not_offered():
    assert "conch_v1" in foundation.NOT_AVAILABLE and "musk" in foundation.NOT_AVAILABLE
