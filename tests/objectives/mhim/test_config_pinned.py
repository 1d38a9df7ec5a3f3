"""MHIM settings groups: every default (the paper's or the authors' code's, docs/mhim.md), every
validation boundary and the exact messages (issue 22: config.py was 54 % under mutation)."""

from __future__ import annotations

import re

import pytest

from histomil.objectives.mhim.config import (
    ConsistencyConfig,
    MaskingConfig,
    RankConfig,
    RecycleConfig,
    TeacherConfig,
    group,
)


def _raises(message: str):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def test_defaults_are_the_documented_ones():
    m = MaskingConfig()
    assert (m.scoring, m.score_class, m.beta_h, m.random_high, m.decay) == (
        "probability", "label", 0.01, True, True,
    )  # fmt: skip
    assert (m.decay_epochs, m.beta_l, m.large_scale, m.high_score_masking) == (
        None, 0.8, "random", "scores",
    )  # fmt: skip
    t = TeacherConfig()
    assert (t.momentum, t.schedule, t.init_student, t.momentum_half_life_epochs) == (
        0.9999, "constant", "projection", None,
    )  # fmt: skip
    r = RecycleConfig()
    assert (r.enabled, r.n_queries, r.heads, r.momentum, r.at_inference, r.dropout) == (
        True, 1, 8, 0.9998, True, 0.0,
    )  # fmt: skip
    c = ConsistencyConfig()
    assert (c.alpha, c.tau) == (0.1, 0.1)
    k = RankConfig()
    assert (k.weight, k.sigma, k.margin, k.max_pos, k.max_neg) == (0.0, 1.0, 1.0, 1024, 1024)


@pytest.mark.parametrize(
    ("field", "valid"),
    [
        ("scoring", "probability, attention"),
        ("score_class", "label, positive, max"),
        ("large_scale", "random, low, none"),
        ("high_score_masking", "scores, target, spare_lesions"),
    ],
)
def test_masking_choices(field, valid):
    with _raises(f"{field} must be one of {valid}; got 'other'"):
        MaskingConfig(**{field: "other"})
    for value in valid.split(", "):
        assert getattr(MaskingConfig(**{field: value}), field) == value


def test_masking_ratio_boundaries():
    assert MaskingConfig(beta_h=0.0).beta_h == 0.0
    assert MaskingConfig(beta_h=0.4999).beta_h == 0.4999
    for bad in (0.5, -0.001):
        with _raises(f"beta_h must be in [0, 0.5), got {bad}"):
            MaskingConfig(beta_h=bad)
    assert MaskingConfig(beta_l=0.0).beta_l == 0.0
    assert MaskingConfig(beta_l=0.999).beta_l == 0.999
    for bad in (1.0, -0.01):
        with _raises(f"beta_l must be in [0, 1), got {bad}"):
            MaskingConfig(beta_l=bad)
    assert MaskingConfig(decay_epochs=1).decay_epochs == 1
    with _raises("decay_epochs must be >= 1 or null, got 0"):
        MaskingConfig(decay_epochs=0)


def test_teacher_boundaries_and_choices():
    assert TeacherConfig(momentum=0.0).momentum == 0.0
    assert TeacherConfig(momentum=1.0).momentum == 1.0
    for bad in (-0.01, 1.01):
        with _raises(f"momentum must be in [0, 1], got {bad}"):
            TeacherConfig(momentum=bad)
    assert TeacherConfig(momentum_half_life_epochs=0.001).momentum_half_life_epochs == 0.001
    for bad in (0, -1.0):
        with _raises(f"momentum_half_life_epochs must be > 0 or null, got {bad}"):
            TeacherConfig(momentum_half_life_epochs=bad)
    with _raises("schedule must be one of constant, cosine; got 'linear'"):
        TeacherConfig(schedule="linear")
    assert TeacherConfig(schedule="cosine").schedule == "cosine"
    with _raises("init_student must be one of projection, all, none; got 'half'"):
        TeacherConfig(init_student="half")
    for value in ("projection", "all", "none"):
        assert TeacherConfig(init_student=value).init_student == value


def test_recycle_and_consistency_boundaries():
    assert RecycleConfig(n_queries=1).n_queries == 1
    with _raises("n_queries must be >= 1, got 0"):
        RecycleConfig(n_queries=0)
    assert RecycleConfig(dropout=0.999).dropout == 0.999
    for bad in (1.0, -0.1):
        with _raises(f"recycle dropout must be in [0, 1), got {bad}"):
            RecycleConfig(dropout=bad)
    assert ConsistencyConfig(alpha=0.0, tau=1e-9).alpha == 0.0
    for alpha, tau in ((-0.01, 0.1), (0.1, 0.0), (0.1, -1.0)):
        with _raises(f"need alpha >= 0 and tau > 0, got {alpha}, {tau}"):
            ConsistencyConfig(alpha=alpha, tau=tau)


def test_group_merges_values_over_defaults():
    got = group(MaskingConfig, {"beta_l": 0.5}, {"beta_l": 0.7, "scoring": "attention"})
    assert (got.beta_l, got.scoring, got.beta_h) == (0.5, "attention", 0.01)
    assert group(MaskingConfig, None, {"beta_h": 0.02}) == MaskingConfig(beta_h=0.02)
    ready = TeacherConfig(momentum=0.5)
    assert group(TeacherConfig, ready, {"momentum": 0.9}) is ready  # an instance is kept as is
    accepted = "alpha, tau"
    with _raises(f"unknown ConsistencyConfig key(s): beta, gamma; accepted: {accepted}"):
        group(ConsistencyConfig, {"gamma": 1, "beta": 2}, {})
