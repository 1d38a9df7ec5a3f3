"""Slide labels of a classification manifest -> class indices, never guessed.

The number of classes is declared (``data.n_classes``) or given by the mapping
(``data.labels: {normal: 0, tumor: 1}``); it is never read off the labels in the manifest (a
stray ``2`` in a binary cohort would otherwise make a silent 3-class run). Accepted labels:

- with ``data.labels``: exactly the mapping's keys (compared as text, so ``0`` and ``"0"`` are
  the same key); anything else is an error;
- without it: integers ``0 .. n_classes-1`` (``1.0`` counts as ``1``), and for a binary cohort
  the usual class names (case-insensitive): ``normal``/``negative``/``benign``/``false`` -> 0
  and ``tumor``/``tumour``/``positive``/``malignant``/``abnormal``/``lesion``/``true`` -> 1,
  the same names ``histomil label`` accepts and CLAM/TRIDENT manifests use.

Every unusable label is reported at once, naming the manifest, the line and the allowed values.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

NEGATIVE_NAMES = ("normal", "negative", "benign", "false")
POSITIVE_NAMES = ("tumor", "tumour", "positive", "malignant", "abnormal", "lesion", "true")
_HINT = "map text labels in the config, e.g. data.labels: {normal: 0, tumor: 1}"


class LabelError(ValueError):
    """Manifest labels that do not fit the declared classes; names file, lines and values."""


def n_classes_of(labels: Mapping[str, int] | None, declared: int | None) -> int:
    """Class count: from the mapping, else the declared one, else 2 (binary)."""
    if labels:
        n = max(labels.values()) + 1
        if declared is not None and declared != n:
            raise LabelError(
                f"data.n_classes: {declared} disagrees with data.labels, which maps to {n} classes"
            )
        return n
    return declared if declared is not None else 2


def label_text(value: Any) -> str | None:
    """The label as the text a user wrote (``1.0`` read by pandas -> ``"1"``); None if empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _index(text: str, labels: Mapping[str, int] | None, n: int) -> int | None:
    if labels:
        return labels.get(text)
    try:
        number = float(text)
    except ValueError:
        low = text.lower()
        if n == 2 and low in NEGATIVE_NAMES:
            return 0
        if n == 2 and low in POSITIVE_NAMES:
            return 1
        return None
    if not number.is_integer() or not 0 <= number < n:
        return None
    return int(number)


def allowed_values(labels: Mapping[str, int] | None, n: int) -> str:
    if labels:
        return ", ".join(f"{k} ({v})" for k, v in sorted(labels.items(), key=lambda kv: kv[1]))
    names = f" (or {'/'.join(NEGATIVE_NAMES[:2])}, {'/'.join(POSITIVE_NAMES[:2])})"
    return ", ".join(map(str, range(n))) + (names if n == 2 else "")


def map_labels(
    df: pd.DataFrame,
    source: str | os.PathLike,
    labels: Mapping[str, int] | None,
    declared: int | None,
) -> tuple[pd.DataFrame, int, list[str]]:
    """``(df with integer labels, n_classes, problems)``; ``df`` is a copy.

    ``problems`` lists every unusable label (file, CSV line, slide, value, allowed values).
    """
    n = n_classes_of(labels, declared)
    out = df.copy()
    mapped: list[int] = []
    bad: list[str] = []
    for i, value in zip(df.index, df["label"], strict=True):
        text = label_text(value)
        index = None if text is None else _index(text, labels, n)
        if index is None:
            bad.append(f"line {int(i) + 2} (slide {df.at[i, 'slide_id']}): {text!r}")
            index = -1
        mapped.append(index)
    out["label"] = pd.Series(mapped, index=df.index, dtype="int64")
    problems = []
    if bad:
        more = f" (+{len(bad) - 20} more)" if len(bad) > 20 else ""
        hint = _HINT if labels is None else "add them to data.labels or fix the manifest"
        if labels is None and any(_is_int(b) for b in bad):
            hint += f"; a cohort with more classes needs data.n_classes (now {n})"
        problems.append(
            f"{source}: label(s) not among the allowed values {allowed_values(labels, n)}: "
            f"{'; '.join(bad[:20])}{more}; {hint}"
        )
    return out, n, problems


def _is_int(entry: str) -> bool:
    value = entry.rsplit(": ", 1)[-1].strip("'")
    try:
        return float(value).is_integer()
    except ValueError:
        return False
