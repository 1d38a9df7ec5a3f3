"""The per-epoch bar of a fold shows train loss, validation loss and the best epoch so far."""

from __future__ import annotations

import io

import pytest
import rich
from rich.console import Console

from histomil.training.fold import _epoch_bar


def _terminal(monkeypatch, terminal: bool) -> io.StringIO:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=220, color_system=None)
    monkeypatch.setattr(rich, "_console", console)  # what rich.get_console() returns
    return out


def test_epoch_bar_shows_losses_and_best_epoch(monkeypatch):
    out = _terminal(monkeypatch, True)
    rows = [
        {"epoch": 0.0, "train_bag": 0.71, "train_rank": 3.0, "val_loss": 0.69, "val_auroc": 0.5},
        {"epoch": 1.0, "train_bag": 0.52, "train_rank": 2.0, "val_loss": 0.55, "val_auroc": 0.7},
        {"epoch": 2.0, "train_bag": 0.40, "train_rank": 1.0, "val_loss": 0.61, "val_auroc": 0.6},
    ]
    with _epoch_bar(3, 10) as show:
        for row in rows:
            show(row)
    text = out.getvalue()
    last = text[text.rindex("fold 3 epoch") :]
    assert "3/10" in last and "train loss 0.4000" in last and "val loss 0.6100" in last
    assert "best epoch 2" in last  # epoch 2 (1-based) had the lowest validation loss


@pytest.mark.parametrize("terminal", [False])
def test_epoch_bar_is_quiet_when_not_a_terminal(monkeypatch, terminal):
    out = _terminal(monkeypatch, terminal)
    with _epoch_bar(0, 2) as show:
        show({"epoch": 0.0, "train_bag": 0.7, "val_loss": 0.6})
    assert out.getvalue().strip() == ""
