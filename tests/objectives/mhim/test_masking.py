"""Masking ratios, randomly-high-score candidates and the cosine decay are exact."""

from __future__ import annotations

import math

import pytest
import torch

from histomil.objectives.mhim.masking import cosine_decay, high_score_counts, mask_instances


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", [7, 100, 1000, 1234])
@pytest.mark.parametrize("beta_h,beta_l", [(0.01, 0.8), (0.05, 0.7), (0.0, 0.9), (0.1, 0.0)])
def test_counts_are_exact(n: int, beta_h: float, beta_l: float) -> None:
    scores = torch.randn(n, generator=_gen(n))
    r = mask_instances(scores, beta_h, beta_l, _gen())
    n_h = min(math.ceil(beta_h * n - 1e-9), n - 1) if beta_h > 0 else 0
    n_rest = n - n_h
    n_l = min(math.ceil(beta_l * n_rest - 1e-9), n_rest - 1) if beta_l > 0 else 0
    assert r.high.numel() == n_h
    assert r.recycled.numel() == n_l
    assert r.keep.numel() == n_rest - n_l
    everything = torch.cat([r.keep, r.recycled, r.high]).sort().values
    assert torch.equal(everything, torch.arange(n))  # disjoint and complete
    assert torch.equal(r.keep, r.keep.sort().values)  # original order kept


def test_random_high_masks_half_of_the_top_two_beta_h() -> None:
    n, beta_h = 1000, 0.02
    scores = torch.arange(n, dtype=torch.float32)  # instance i has score i
    top = set(range(n - 40, n))  # top 2 * beta_h = 40 candidates
    seen: set[int] = set()
    for seed in range(20):
        r = mask_instances(scores, beta_h, 0.0, _gen(seed))
        high = set(r.high.tolist())
        assert len(high) == 20 and high <= top
        seen |= high
    assert len(seen) > 20  # the masked half varies with the generator
    plain = mask_instances(scores, beta_h, 0.0, _gen(), random_high=False)
    assert set(plain.high.tolist()) == set(range(n - 20, n))
    assert high_score_counts(n, beta_h) == (20, 40)


def test_low_score_masking_takes_the_lowest_of_the_rest() -> None:
    scores = torch.arange(100, dtype=torch.float32)
    r = mask_instances(scores, 0.05, 0.5, _gen(), random_high=False, large_scale="low")
    assert set(r.high.tolist()) == set(range(95, 100))
    assert set(r.recycled.tolist()) == set(range(0, 48))  # ceil(0.5 * 95) = 48 lowest


def test_same_seed_same_masks_and_one_instance_always_kept() -> None:
    s = torch.randn(50, generator=_gen(3))
    a, b = mask_instances(s, 0.04, 0.8, _gen(5)), mask_instances(s, 0.04, 0.8, _gen(5))
    assert torch.equal(a.keep, b.keep) and torch.equal(a.recycled, b.recycled)
    one = mask_instances(torch.zeros(1), 0.4, 0.99, _gen())
    assert one.keep.tolist() == [0]
    two = mask_instances(torch.zeros(2), 0.4, 0.99, _gen())
    assert two.keep.numel() == 1


def test_cosine_decay_schedule_is_exact() -> None:
    assert cosine_decay(0.04, 0, 10) == pytest.approx(0.04)
    assert cosine_decay(0.04, 5, 10) == pytest.approx(0.02)
    assert cosine_decay(0.04, 10, 10) == pytest.approx(0.0, abs=1e-12)
    for e in range(11):
        assert cosine_decay(0.04, e, 10) == pytest.approx(0.02 * (1 + math.cos(math.pi * e / 10)))
    assert cosine_decay(0.04, 20, 10) == pytest.approx(0.0, abs=1e-12)
