"""Terminal summaries print counts as integers per fold, never averaged over folds."""

from __future__ import annotations

import re

from histomil.viz.summary import fold_counts, metrics_summary


def _metrics(ns):
    folds = [
        {
            "fold": k,
            "test": {"auroc": 0.8 + 0.05 * k, "n": n, "n_positive": n // 2, "threshold": 0.4},
        }
        for k, n in enumerate(ns)
    ]
    mean_n = sum(ns) / len(ns)
    return {
        "folds": folds,
        "n_folds": len(ns),
        "test": {
            "auroc": {"mean": 0.85, "sd": 0.05, "n": len(ns)},
            "n": {"mean": mean_n, "sd": 0.58, "n": len(ns)},  # what run.py aggregates today
            "n_positive": {"mean": mean_n / 2, "sd": 0.58, "n": len(ns)},
            "threshold": {"mean": 0.4, "sd": 0.0, "n": len(ns)},
        },
    }


def test_counts_are_integers_listed_once():
    text = metrics_summary(_metrics([15, 15, 14]))
    assert text == (
        "auroc 0.850 ± 0.050 (mean ± sd over 3 folds; 44 test slides: "
        "15 (7 positive), 15 (7 positive), 14 (7 positive))"
    )
    assert "14.667" not in text and "threshold" not in text
    assert not re.search(r"\bn \d", text)
    assert fold_counts(_metrics([4, 5])) == [4, 5]


def test_single_fold_and_empty():
    metrics = _metrics([10])
    metrics["test"]["auroc"]["sd"] = None
    assert metrics_summary(metrics) == (
        "auroc 0.850 (mean ± sd over 1 fold; 10 test slides (5 positive))"
    )
    assert metrics_summary({"folds": [], "test": {}}) == ""
