"""Per-fold metrics for the trainer: thin adapters over :mod:`histomil.evaluation`.

- ``pick_threshold(labels, probs, method)``: decision threshold chosen on *validation* data
  (``youden``, ``f1``, ``fixed`` or a number such as ``0.5``);
- ``binary_metrics``: AUROC, AUPRC (average precision), accuracy, F1, sensitivity, specificity;
- ``c_index`` / ``c_index_with_ci``: Harrell's C-index (higher risk = earlier event);
- ``survival_bins`` / ``discretize_times``: time bins from training data only.
"""

from __future__ import annotations

import warnings

import numpy as np

from histomil import evaluation as ev


def pick_threshold(labels: np.ndarray, probs: np.ndarray, method: str = "youden") -> float:
    """Threshold on validation probabilities (binary); a numeric string is a fixed threshold."""
    try:
        return float(method)
    except ValueError:
        return float(ev.choose_threshold(labels, probs, method))


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPRC, accuracy, F1, sensitivity, specificity at ``threshold``."""
    return {
        k: float(v) for k, v in dict(ev.classification_metrics(labels, probs, threshold)).items()
    }


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Macro one-vs-rest AUROC/AUPRC, accuracy and macro F1 of the argmax class."""
    return {k: float(v) for k, v in dict(ev.multiclass_metrics(labels, probs)).items()}


def c_index(times: np.ndarray, risks: np.ndarray, events: np.ndarray) -> float:
    """Harrell's C-index; higher ``risks`` mean earlier events."""
    return float(ev.concordance_index(times, risks, events))


def c_index_with_ci(
    times: np.ndarray, risks: np.ndarray, events: np.ndarray, n: int = 500, seed: int = 0
) -> dict[str, float]:
    """C-index plus a percentile bootstrap 95 % CI (``c_index_low``/``c_index_high``)."""
    out = {"c_index": c_index(times, risks, events)}
    if len(times) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = ev.concordance_ci(times, risks, events, n=n, seed=seed)
        out.update(c_index_low=float(ci.low), c_index_high=float(ci.high))
    return out


def survival_bins(times: np.ndarray, events: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges (n_bins + 1,) from training data only (quantiles of uncensored times)."""
    return np.asarray(ev.time_bins(times, events, n_bins), dtype=float)


def discretize_times(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each time given ``edges`` (clipped to the valid range)."""
    return np.asarray(ev.discretize(times, edges)).astype(int)
