"""Multiclass prediction columns are read in class order, not text order (found by the issue-22
mutation run of training/fold.py): with 11 or more classes a text sort puts ``prob_10`` after
``prob_1`` and scores every class from the 11th on against another class's column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histomil.evaluation.metrics import prob_columns
from histomil.training.fold import fold_metrics
from histomil.viz._metrics import _task_arrays


def _rows(n_classes: int = 11, per_class: int = 4) -> pd.DataFrame:
    labels = np.arange(n_classes * per_class) % n_classes
    probs = np.full((len(labels), n_classes), 0.1 / (n_classes - 1))
    probs[np.arange(len(labels)), labels] = 0.9  # each row sure of its own class
    df = pd.DataFrame({f"prob_{c}": probs[:, c] for c in range(n_classes)})
    df.insert(0, "label", labels)
    return df


def test_prob_columns_are_in_class_order():
    cols = ["slide_id", "prob_10", "prob", "prob_2", "prob_1", "prob_0", "prob_x", "prob_11"]
    assert prob_columns(cols) == ["prob_0", "prob_1", "prob_2", "prob_10", "prob_11"]


def test_eleven_classes_perfect_predictions_score_perfectly():
    m = fold_metrics(_rows(), "multiclass", None)
    assert m["accuracy"] == pytest.approx(1.0)
    assert m["auroc"] == pytest.approx(1.0)


def test_report_arrays_use_class_order():
    df = _rows()
    shuffled = df[["label"] + [f"prob_{c}" for c in (3, 10, 0, 7, 1, 2, 9, 4, 5, 6, 8)]]
    labels, probs = _task_arrays(shuffled, "multiclass", None)
    np.testing.assert_array_equal(probs.argmax(1), labels)
