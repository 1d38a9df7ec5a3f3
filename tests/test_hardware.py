"""bfloat16 on hardware that only emulates it: a warning, and `auto` never picks it."""

from __future__ import annotations

import warnings

import pytest
import torch

from histomil import hardware
from histomil.features.extract import resolve_precision


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setattr(hardware, "_native_bf16", lambda device_type: False)
    monkeypatch.setattr(hardware, "_WARNED", set())


def test_explicit_bf16_on_emulating_cpu_warns_once(emulated):
    cpu = torch.device("cpu")
    with pytest.warns(hardware.EmulatedPrecisionWarning, match="not native"):
        assert resolve_precision("bf16", cpu) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", cpu) == "bf16"  # once per process


def test_auto_never_picks_emulated_bf16(emulated):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_native_bf16_is_chosen_silently(monkeypatch):
    monkeypatch.setattr(hardware, "_native_bf16", lambda device_type: True)
    monkeypatch.setattr(hardware, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto", torch.device("cpu")) == "bf16"
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_training_autocast_warns_on_emulated_bf16(emulated):
    from histomil.training.trainer import _autocast

    with pytest.warns(hardware.EmulatedPrecisionWarning):
        with _autocast(torch.device("cpu"), "bfloat16"):
            pass
