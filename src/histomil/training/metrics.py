"""Per-fold metrics for the trainer, through :mod:`histomil.evaluation` when it provides the
function, with small local equivalents otherwise (so training never depends on import order).

- ``pick_threshold(labels, probs, method)``: decision threshold chosen on *validation* data
  (``youden`` = max sensitivity + specificity - 1, ``f1``, or a fixed number such as ``0.5``);
- ``binary_metrics``: AUROC, AUPRC (average precision), accuracy, F1, sensitivity, specificity;
- ``survival_bins``: bin edges from the quantiles of uncensored training times, with the outer
  edges opened to (-inf, inf) so every time falls into a bin.
"""

from __future__ import annotations

import numpy as np


def _evaluation(name: str):
    try:
        import histomil.evaluation as ev
    except ImportError:  # pragma: no cover
        return None
    return getattr(ev, name, None)


def pick_threshold(labels: np.ndarray, probs: np.ndarray, method: str = "youden") -> float:
    """Threshold on validation probabilities (binary)."""
    try:
        return float(method)
    except ValueError:
        pass
    fn = _evaluation("choose_threshold")
    if fn is not None:
        return float(fn(labels, probs, method))
    from sklearn.metrics import f1_score, roc_curve

    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    if len(np.unique(labels)) < 2:
        return 0.5
    if method == "youden":
        fpr, tpr, thr = roc_curve(labels, probs)
        thr = np.clip(thr, 0.0, 1.0)
        return float(thr[int(np.argmax(tpr - fpr))])
    if method == "f1":
        cands = np.unique(probs)
        scores = [f1_score(labels, probs >= t, zero_division=0) for t in cands]
        return float(cands[int(np.argmax(scores))])
    raise ValueError(f"unknown threshold method {method!r}; use youden, f1 or a number")


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPRC, accuracy, F1, sensitivity, specificity at ``threshold``."""
    fn = _evaluation("classification_metrics")
    if fn is not None:
        return {k: float(v) for k, v in dict(fn(labels, probs, threshold)).items()}
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    pred = (probs >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    tp = int(((pred == 1) & (labels == 1)).sum())
    tn = int(((pred == 0) & (labels == 0)).sum())
    pos, neg = int((labels == 1).sum()), int((labels == 0).sum())
    return {
        "auroc": float(roc_auc_score(labels, probs)) if both else float("nan"),
        "auprc": float(average_precision_score(labels, probs)) if pos else float("nan"),
        "accuracy": float((pred == labels).mean()),
        "f1": float(f1_score(labels, pred, zero_division=0)),
        "sensitivity": tp / pos if pos else float("nan"),
        "specificity": tn / neg if neg else float("nan"),
    }


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Macro one-vs-rest AUROC/AUPRC, accuracy and macro F1 of the argmax class."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    pred = probs.argmax(axis=1)
    onehot = np.eye(probs.shape[1])[labels]
    try:
        auroc = float(roc_auc_score(labels, probs, multi_class="ovr", labels=range(probs.shape[1])))
    except ValueError:
        auroc = float("nan")
    return {
        "auroc": auroc,
        "auprc": float(average_precision_score(onehot, probs, average="macro")),
        "accuracy": float(accuracy_score(labels, pred)),
        "f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
    }


def c_index(times: np.ndarray, risks: np.ndarray, events: np.ndarray) -> float:
    """Harrell's C-index; higher ``risks`` mean earlier events."""
    fn = _evaluation("concordance_index")
    if fn is not None:
        return float(fn(times, risks, events))
    from lifelines.utils import concordance_index

    return float(concordance_index(times, -np.asarray(risks), events))


def c_index_with_ci(
    times: np.ndarray, risks: np.ndarray, events: np.ndarray, n: int = 500, seed: int = 0
) -> dict[str, float]:
    """C-index plus a percentile bootstrap 95 % CI (``c_index_low``/``c_index_high``)."""
    out = {"c_index": c_index(times, risks, events)}
    fn = _evaluation("concordance_ci")
    if fn is not None and len(times) >= 3:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = fn(times, risks, events, n=n, seed=seed)
        out.update(c_index_low=float(ci.low), c_index_high=float(ci.high))
    return out


def survival_bins(times: np.ndarray, events: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges (n_bins + 1,) from training data only."""
    fn = _evaluation("time_bins")
    if fn is not None:
        return np.asarray(fn(times, events, n_bins), dtype=float)
    times = np.asarray(times, dtype=float)
    events = np.asarray(events).astype(bool)
    ref = times[events] if events.any() else times
    edges = np.quantile(ref, np.linspace(0, 1, n_bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def discretize_times(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each time given ``edges`` (clipped to the valid range)."""
    fn = _evaluation("discretize")
    if fn is not None:
        return np.asarray(fn(times, edges)).astype(int)
    idx = np.searchsorted(np.asarray(edges)[1:-1], np.asarray(times, dtype=float), side="right")
    return np.clip(idx, 0, len(edges) - 2).astype(int)
