"""Streamed (lazy) bags, float16-as-stored loading and the memory-budget choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from histomil.bags import write_bag
from histomil.bags.dataset import load_cohort
from histomil.bags.stream import feature_nbytes, is_lazy, materialize, memory_budget, prefetch


@pytest.fixture()
def cohort(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, dtype in enumerate(("float16", "float32", "float16")):
        n = 20 + 7 * i
        write_bag(
            tmp_path / "bags" / f"s{i}.h5",
            rng.normal(size=(n, 6)).astype(np.float32),
            np.stack([np.arange(n) * 224, np.zeros(n)], 1).astype(np.int64),
            patch_labels=(np.arange(n) % 3 == 0).astype(np.int8),
            overlap=rng.random(n).astype(np.float32),
            dtype=dtype,
        )
        rows.append({"slide_id": f"s{i}", "label": i % 2})
    return pd.DataFrame(rows), tmp_path


def test_lazy_bags_materialize_to_the_loaded_bags(cohort):
    df, folder = cohort
    eager = load_cohort(df, folder)
    lazy = load_cohort(df, folder, stream=True)
    for sid, bag in lazy.items():
        assert is_lazy(bag) and bag.features.shape == eager[sid].features.shape
        assert bag.features.untyped_storage().nbytes() <= 2  # nothing in memory yet
        full = materialize(bag)
        assert not is_lazy(full) and full.features.dtype == torch.float32
        torch.testing.assert_close(full.features, eager[sid].features, rtol=0, atol=0)
        for key in ("coords", "patch_labels", "overlap"):
            torch.testing.assert_close(getattr(bag, key), getattr(eager[sid], key))
        assert bag.label == eager[sid].label and bag.slide_id == sid


def test_prefetch_keeps_order_and_passes_memory_bags_through(cohort):
    df, folder = cohort
    lazy = list(load_cohort(df, folder, stream=True).values())
    eager = list(load_cohort(df, folder).values())
    order = [2, 0, 1, 2]
    got = list(prefetch(lazy, order, depth=2))
    assert [b.slide_id for b in got] == [lazy[i].slide_id for i in order]
    for b, i in zip(got, order, strict=True):
        torch.testing.assert_close(b.features, eager[i].features)
    assert all(a is eager[i] for a, i in zip(prefetch(eager, order), order, strict=True))


def test_half_auto_keeps_float16_only_where_stored(cohort):
    df, folder = cohort
    bags = load_cohort(df, folder, half="auto")
    assert [bags[s].features.dtype for s in ("s0", "s1", "s2")] == [
        torch.float16,
        torch.float32,
        torch.float16,
    ]


def test_stream_none_follows_the_memory_budget(cohort, monkeypatch):
    df, folder = cohort
    need = sum(feature_nbytes(folder / "bags" / f"s{i}.h5") for i in range(3))
    assert need == (20 * 6 + 34 * 6) * 2 + 27 * 6 * 4
    monkeypatch.setenv("HISTOMIL_MEMORY_GB", str(need / 2 / 2**30))
    assert memory_budget() < need
    assert all(is_lazy(b) for b in load_cohort(df, folder, stream=None).values())
    monkeypatch.setenv("HISTOMIL_MEMORY_GB", "1")
    assert not any(is_lazy(b) for b in load_cohort(df, folder, stream=None).values())
