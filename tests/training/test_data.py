from __future__ import annotations

from dataclasses import replace

import torch

from histomil.annotations.overlap import dilate_labels
from histomil.bags.bag import Bag
from histomil.bags.io import grid_pitch
from histomil.training.config import DataConfig
from histomil.training.data import patient_bags, prepare_train_bags


def _grid_bag(sid: str, label: int, lesion: list[int], case: str | None = None) -> Bag:
    xs, ys = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="xy")
    coords = torch.stack([xs.flatten(), ys.flatten()], dim=1) * 448 + 1000
    labels = torch.zeros(25, dtype=torch.int8)
    labels[lesion] = 1
    overlap = labels.float() * 0.5
    return Bag(sid, torch.randn(25, 4), label, coords, labels, overlap, case_id=case)


def test_grid_pitch_and_dilation():
    bag = _grid_bag("a", 1, [12])  # centre of the 5 x 5 grid
    assert grid_pitch(bag.coords) == 448
    one = dilate_labels(bag.patch_labels, bag.coords, 1, 448)
    assert int(one.sum()) == 9  # 3 x 3 square around the centre
    two = dilate_labels(bag.patch_labels, bag.coords, 2, 448)
    assert int(two.sum()) == 25
    unknown = bag.patch_labels.clone()
    unknown[13] = -1
    assert dilate_labels(unknown, bag.coords, 1, 448)[13] == -1  # unknown stays unknown


def test_padding_and_min_overlap_touch_training_labels():
    bag = _grid_bag("a", 1, [12])
    padded = prepare_train_bags([bag], DataConfig("m", "b", padding_px=448), seed=0)[0]
    assert int((padded.patch_labels == 1).sum()) == 9
    assert torch.isclose(padded.attn_target.sum(), torch.tensor(1.0))
    strict = prepare_train_bags([bag], DataConfig("m", "b", min_overlap=0.6), seed=0)[0]
    assert int((strict.patch_labels == 1).sum()) == 0


def test_annotated_fraction_hides_labels_on_positive_slides_only():
    bags = [_grid_bag(f"p{i}", 1, [3, 4]) for i in range(10)] + [_grid_bag("n", 0, [])]
    out = prepare_train_bags(bags, DataConfig("m", "b", annotated_fraction=0.2), seed=3)
    kept = [b.slide_id for b in out if b.has_lesion_labels]
    assert len(kept) == 2
    hidden = [b for b in out if b.label == 1 and not b.has_lesion_labels]
    assert all(bool((b.patch_labels == -1).all()) and b.attn_target is None for b in hidden)
    assert bool((out[-1].patch_labels == 0).all())  # negative slide keeps its labels
    again = prepare_train_bags(bags, DataConfig("m", "b", annotated_fraction=0.2), seed=3)
    assert kept == [b.slide_id for b in again if b.has_lesion_labels]


def test_patient_bags_concatenate_with_unique_coords():
    bags = {
        "s1": _grid_bag("s1", 1, [1], case="c1"),
        "s2": _grid_bag("s2", 1, [2], case="c1"),
        "s3": _grid_bag("s3", 0, [], case="c2"),
    }
    merged, members = patient_bags(bags)
    assert members == {"c1": ["s1", "s2"], "c2": ["s3"]}
    c1 = merged["c1"]
    assert c1.n_instances == 50 and c1.slide_id == "c1"
    assert len({tuple(c) for c in c1.coords.tolist()}) == 50
    assert torch.equal(c1.features[:25], bags["s1"].features)


def test_padding_on_a_grid_whose_x_and_y_start_apart_and_on_a_single_patch():
    bag = _grid_bag("a", 1, [12])
    shifted = replace(bag, coords=bag.coords + torch.tensor([10, 0]))  # x from 1010, y from 1000
    padded = prepare_train_bags([shifted], DataConfig("m", "b", padding_px=448), seed=0)[0]
    assert int((padded.patch_labels == 1).sum()) == 9  # pooled x/y values gave a pitch of 2
    one = Bag(
        "s", torch.randn(1, 4), 1, torch.tensor([[0, 0]]), torch.tensor([1], dtype=torch.int8)
    )
    kept = prepare_train_bags([one], DataConfig("m", "b", padding_px=448), seed=0)[0]
    assert kept.patch_labels.tolist() == [1]  # was an error: no pitch from one patch
