"""The cost benchmark measures every method on the same bags and writes CSV + markdown."""

from __future__ import annotations

from pathlib import Path

import pytest

synth = pytest.importorskip("histomil.synth.bags")


def test_measure_cost_on_tiny_bags(tmp_path: Path) -> None:
    from histomil.experiments.cost import CostMethod, CostSettings, measure_cost

    manifest = synth.generate_bags(tmp_path / "data", "tiny", seed=0)
    small = {"hidden": 16, "attn_dim": 8}
    methods = (
        CostMethod("AB-MIL", "abmil", "bag", small),
        CostMethod("MHIM-v2(AB-MIL)", "abmil", "mhim_v2", small),
    )
    settings = CostSettings(epochs=1, max_bags=4, isolate=False)
    table = measure_cost(manifest, None, tmp_path / "out", methods, settings)
    assert list(table["method"]) == ["AB-MIL", "MHIM-v2(AB-MIL)"]
    assert (table["train_s_per_epoch"] > 0).all() and (table["infer_slides_per_s"] > 0).all()
    assert table["parameters_ratio"].iloc[0] == 1.0
    assert table["parameters"].iloc[1] > table["parameters"].iloc[0]  # + recycle network
    assert table["paper_parameters_ratio"].iloc[1] == pytest.approx(1.64 / 0.66)
    # memory: a training step's allocator peak (deterministic) beside the process's peak RSS
    assert (table["step_peak_alloc_mb"] > 0).all() and (table["peak_memory_mb"] >= 0).all()
    ratio = table["step_peak_alloc_mb"].iloc[1] / table["step_peak_alloc_mb"].iloc[0]
    assert table["step_peak_alloc_mb_ratio"].iloc[1] == pytest.approx(ratio)
    assert table["paper_step_peak_alloc_mb_ratio"].iloc[1] == pytest.approx(2.8 / 2.3)
    md = (tmp_path / "out" / "cost.md").read_text()
    assert "MHIM-v2(AB-MIL)" in md and (tmp_path / "out" / "cost.csv").is_file()
    assert "| step peak allocated (MB) | peak memory (MB) |" in md
    assert "'warmup_steps': 2" in md  # untimed steps before the timed epoch, stated
    cold = CostSettings(epochs=1, max_bags=4, isolate=False, warmup_steps=0)
    assert len(measure_cost(manifest, None, None, methods[:1], cold)) == 1


def test_parameter_counts_match_table6_by_hand() -> None:
    from histomil.experiments.cost import CostMethod, parameter_count, table6_parameters

    fc, cls = 1024 * 512 + 512, 512 * 2 + 2
    attn_plain = 512 * 128 + 128 + 128 + 1  # tanh branch + scoring layer
    gate = 512 * 128 + 128  # sigmoid branch of the gated attention
    grn = 4 * 512 * 512 + 4 * 512 + 2 * 512  # multi-head attention (q, k, v, out) + LayerNorm
    plain = CostMethod("AB-MIL (non-gated)", "abmil", "bag", {"gated": False})
    mhim_plain = CostMethod("MHIM-v2(AB-MIL, non-gated)", "abmil", "mhim_v2", {"gated": False})
    assert parameter_count(plain, 1024, 2) == fc + attn_plain + cls
    assert parameter_count(CostMethod("AB-MIL", "abmil"), 1024, 2) == fc + attn_plain + gate + cls
    assert parameter_count(mhim_plain, 1024, 2) == fc + attn_plain + cls + grn
    table = table6_parameters((plain, mhim_plain)).set_index("method")
    assert round(table.loc["MHIM-v2(AB-MIL, non-gated)", "parameters_M"], 2) == 1.64
    assert table.loc["MHIM-v2(AB-MIL, non-gated)", "paper_parameters_M"] == 1.64
