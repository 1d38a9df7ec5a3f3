"""Pinned MHIM masking: counts at their caps and float edges, a replay of the generator draws,
tie-breaking by index, the schedule's clamps and the exact error messages (issue 22, mutation)."""

from __future__ import annotations

import math

import pytest
import torch

from histomil.objectives.mhim.masking import cosine_decay, high_score_counts, mask_instances


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "n,beta_h,random_high,expected",
    [
        (1, 0.4, True, (0, 0)),  # a single instance is never masked
        (2, 0.4, True, (1, 2)),  # ceil(0.8) = 1 masked among ceil(1.6) = 2 candidates
        (100, 0.0, True, (0, 0)),
        # 0.05 * 100 = 5.000000000000001 in floating point: still 5 (and 10 candidates)
        (100, 0.05, True, (5, 10)),
        (100, 0.05, False, (5, 5)),
        (10, 0.6, True, (6, 10)),  # candidates capped at n
        (10, 0.95, True, (9, 10)),  # masked capped at n - 1
        (3, 0.1, True, (1, 1)),  # ceil(0.3) = 1 masked, ceil(0.6) = 1 candidate
    ],
)
def test_high_score_counts_by_hand(n, beta_h, random_high, expected):
    assert high_score_counts(n, beta_h, random_high) == expected


def test_high_score_counts_defaults_to_random_high():
    assert high_score_counts(100, 0.05) == (5, 10)


@pytest.mark.parametrize("beta_h", [-0.1, 1.0])
def test_beta_h_out_of_range_is_refused(beta_h):
    with pytest.raises(ValueError, match=rf"^beta_h must be in \[0, 1\), got {beta_h}$"):
        high_score_counts(10, beta_h)


def test_mask_instances_errors_are_exact():
    s = torch.zeros(4)
    with pytest.raises(
        ValueError,
        match=r"^large_scale must be one of \('random', 'low', 'none'\), got 'lsm'$",
    ):
        mask_instances(s, 0.1, 0.5, large_scale="lsm")
    for beta_l in (-0.5, 1.0):
        with pytest.raises(ValueError, match=rf"^beta_l must be in \[0, 1\), got {beta_l}$"):
            mask_instances(s, 0.1, beta_l)
    with pytest.raises(ValueError, match="^cannot mask an empty bag$"):
        mask_instances(torch.zeros(0), 0.1, 0.5)
    # the boundaries of the ranges are accepted
    assert mask_instances(s, 0.0, 0.0).keep.tolist() == [0, 1, 2, 3]


def test_random_masks_replay_the_generator_by_hand():
    """RHSM draws ``randperm(n_c)[:n_h]`` among the top ``n_c`` by score, then RSM draws
    ``randperm(N^)[:n_l]`` among the rest (ascending index), from the same generator."""
    n, beta_h, beta_l = 20, 0.1, 0.5
    scores = torch.randn(n, generator=_gen(7))
    result = mask_instances(scores, beta_h, beta_l, _gen(3))
    gen = _gen(3)
    order = sorted(range(n), key=lambda i: -float(scores[i]))
    n_h, n_c = 2, 4  # ceil(0.1 * 20), ceil(0.2 * 20)
    high = [order[i] for i in torch.randperm(n_c, generator=gen)[:n_h].tolist()]
    rest = [i for i in range(n) if i not in high]
    n_l = math.ceil(beta_l * len(rest))  # 9
    recycled = [rest[i] for i in torch.randperm(len(rest), generator=gen)[:n_l].tolist()]
    assert result.high.tolist() == sorted(high)
    assert result.recycled.tolist() == sorted(recycled)
    assert result.keep.tolist() == [i for i in range(n) if i not in high + recycled]
    assert result.keep.dtype == result.recycled.dtype == result.high.dtype == torch.long


def test_ties_are_broken_by_index_and_scores_may_be_two_dimensional():
    """Equal scores: the plain high-score mask takes the lowest indices (stable sort, easiest
    first), low-score masking takes the lowest indices of the rest."""
    scores = torch.full((10, 1), 0.5)
    r = mask_instances(scores, 0.2, 0.5, _gen(), random_high=False, large_scale="low")
    assert r.high.tolist() == [0, 1]
    assert r.recycled.tolist() == [2, 3, 4, 5]  # ceil(0.5 * 8) = 4
    assert r.keep.tolist() == [6, 7, 8, 9]


def test_low_score_masking_is_ordered_by_score_not_index():
    scores = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 1.0])
    r = mask_instances(scores, 0.1, 0.5, _gen(), random_high=False, large_scale="low")
    assert r.high.tolist() == [9]  # the highest score
    # the 5 lowest of the 9 others: 0.1, 0.2, 0.3, 0.4, 0.5
    assert r.recycled.tolist() == [1, 3, 5, 7, 8]
    assert r.keep.tolist() == [0, 2, 4, 6]


def test_no_large_scale_masking_when_off_or_zero():
    scores = torch.arange(10, dtype=torch.float32)
    for kwargs in ({"large_scale": "none"}, {"large_scale": "random"}):
        beta_l = 0.9 if kwargs["large_scale"] == "none" else 0.0
        r = mask_instances(scores, 0.1, beta_l, _gen(), random_high=False, **kwargs)
        assert r.recycled.numel() == 0
        assert r.high.tolist() == [9]
        assert r.keep.tolist() == list(range(9))


def test_at_least_one_instance_is_kept_after_both_masks():
    scores = torch.arange(5, dtype=torch.float32)
    for large_scale in ("random", "low"):
        r = mask_instances(scores, 0.2, 0.99, _gen(), random_high=False, large_scale=large_scale)
        assert r.high.tolist() == [4]
        assert r.recycled.numel() == 3 and r.keep.numel() == 1
    low = mask_instances(scores, 0.2, 0.99, _gen(), random_high=False, large_scale="low")
    assert low.keep.tolist() == [3]


def test_cosine_decay_clamps_and_end_value():
    assert cosine_decay(0.04, 3, 0, end=0.01) == 0.01  # no schedule: the end value
    assert cosine_decay(0.04, 3, -1) == 0.0
    assert cosine_decay(0.04, -5, 10) == pytest.approx(0.04)  # before the start: clamped
    assert cosine_decay(0.04, 5, 10, end=0.02) == pytest.approx(0.03)
    assert cosine_decay(0.04, 10, 10, end=0.02) == pytest.approx(0.02)
    assert cosine_decay(0.04, 2.5, 10) == pytest.approx(0.02 * (1 + math.cos(math.pi / 4)))
    assert isinstance(cosine_decay(1, 0, 0, end=0), float)
    # a one-step schedule is still a schedule (mutation survivor: ``total <= 1`` -> end value)
    assert cosine_decay(0.04, 0, 1) == pytest.approx(0.04)
    assert cosine_decay(0.04, 0.5, 1) == pytest.approx(0.02)


def test_ties_in_a_large_bag_are_broken_by_index():
    """Mutation survivor (``stable=True`` dropped): torch's CPU sort keeps ties in order for small
    tensors only, so the tie-break by index is checked on 1000 instances with 3 score values."""
    n = 1000
    scores = torch.randint(0, 3, (n,), generator=_gen(2)).float()
    s = scores.tolist()
    r = mask_instances(scores, 0.1, 0.5, _gen(), random_high=False, large_scale="low")
    high = sorted(range(n), key=lambda i: (-s[i], i))[:100]
    rest = [i for i in range(n) if i not in set(high)]
    low = sorted(rest, key=lambda i: (s[i], i))[:450]  # ceil(0.5 * 900)
    assert r.high.tolist() == sorted(high)
    assert r.recycled.tolist() == sorted(low)


def test_plain_high_score_masking_draws_nothing_from_the_generator():
    """Mutation survivors (``randperm`` also when candidates == masked): plain HSM takes the top
    scores without a draw, so the random large-scale mask is the generator's first ``randperm``."""
    n, beta_h = 20, 0.1
    scores = torch.randn(n, generator=_gen(5))
    order = sorted(range(n), key=lambda i: -float(scores[i]))
    r = mask_instances(scores, beta_h, 0.5, _gen(9), random_high=False)
    high = order[:2]
    rest = [i for i in range(n) if i not in high]
    recycled = [rest[i] for i in torch.randperm(18, generator=_gen(9))[:9].tolist()]
    assert r.high.tolist() == sorted(high)
    assert r.recycled.tolist() == sorted(recycled)


def test_one_recycled_instance_random_or_lowest():
    """Mutation survivors (``n_l > 0`` -> ``n_l > 1``): with N^ = 2 and beta_l = 0.5 exactly one
    instance is recycled, drawn at random (RSM) or the lowest score (LSM)."""
    scores = torch.tensor([0.7, 0.2])
    low = mask_instances(scores, 0.0, 0.5, _gen(), large_scale="low")
    assert low.recycled.tolist() == [1] and low.keep.tolist() == [0]
    for seed in range(4):
        rnd = mask_instances(scores, 0.0, 0.5, _gen(seed))
        expected = torch.randperm(2, generator=_gen(seed))[:1].tolist()
        assert rnd.recycled.tolist() == expected
        assert rnd.keep.tolist() == [1 - expected[0]]


def test_a_mask_without_random_draws_leaves_the_generator_untouched():
    """Mutation survivor (``randperm`` also for n_l = 0): a bag that needs no random mask does
    not advance the shared generator, so it cannot shift the masks of the following bags."""
    gen = _gen(11)
    scores = torch.arange(8, dtype=torch.float32)
    mask_instances(scores, 0.0, 0.0, gen)  # nothing masked
    mask_instances(scores[:1], 0.3, 0.5, gen)  # a single instance
    mask_instances(scores[:2], 0.0, 0.4, gen)  # one of two recycled: a draw
    drawn = gen.get_state()
    assert not torch.equal(drawn, _gen(11).get_state())
    gen = _gen(11)
    mask_instances(scores, 0.0, 0.0, gen)
    mask_instances(scores[:1], 0.3, 0.5, gen)
    mask_instances(scores, 0.2, 0.5, gen, random_high=False, large_scale="none")
    assert torch.equal(gen.get_state(), _gen(11).get_state())
