"""Tiny synthetic cohorts shared by the training tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """32 train+val / 12 test slides of ~150 patches, 32-d features, strong lesion signal."""
    from histomil.synth.bags import generate_bags

    out = tmp_path_factory.mktemp("cohort")
    return generate_bags(
        out,
        preset="camelyon16-small",
        seed=0,
        patches_median=150,
        patches_min=80,
        patches_max=300,
        signal=5.0,
    )


@pytest.fixture(scope="session")
def survival_cohort(tmp_path_factory) -> Path:
    from histomil.synth.bags import generate_bags

    """60 cases of 1-3 slides; hazard strongly tied to lesion content, little censoring."""
    out = tmp_path_factory.mktemp("survival")
    return generate_bags(
        out,
        preset="survival-small",
        seed=0,
        n_cases=60,
        patches_median=80,
        patches_min=40,
        patches_max=160,
        hazard_share=2.5,
        hazard_grade=2.5,
        censoring=0.2,
    )


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
