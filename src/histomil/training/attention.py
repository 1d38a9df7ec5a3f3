"""Per-slide attention export: ``RUN/attention/<fold>/<slide_id>.h5`` for heatmaps/localization.

Datasets: ``coords`` (N, 2), ``attention`` (N,) pooling weights of the positive-class branch
(after thresholding), ``scores`` (N,) raw pre-softmax scores, optional ``instance_prob`` (N,)
and ``patch_labels`` (N,). Attributes: ``slide_id``, ``label``, ``prob``, ``split``, ``model``,
``bag_path``, ``slide_path`` (when the manifest has it), ``patch_size_level0`` (when the bag file
records it). :func:`histomil.viz.attention.read_attention_h5` reads them back (kept in ``viz`` so
that reading, e.g. ``histomil heatmap``, does not import torch as this package does) and
:func:`histomil.viz.attention.run_attention_files` lists a run's files in fold order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from histomil._io import atomic_path
from histomil.bags.bag import Bag
from histomil.training.trainer import Prediction


def write_attention(
    path: str | os.PathLike, bag: Bag, pred: Prediction, attrs: dict[str, Any]
) -> Path | None:
    """Write one slide's attention file atomically (None when the model has no attention)."""
    if pred.weights is None and pred.scores is None:
        return None
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            if bag.coords is not None:
                f.create_dataset("coords", data=bag.coords.cpu().numpy().astype(np.int64))
            if pred.weights is not None:
                f.create_dataset("attention", data=pred.weights.astype(np.float32))
            if pred.scores is not None:
                f.create_dataset("scores", data=pred.scores.astype(np.float32))
            if pred.instance_prob is not None:
                f.create_dataset("instance_prob", data=pred.instance_prob.astype(np.float32))
            if bag.patch_labels is not None:
                f.create_dataset(
                    "patch_labels", data=bag.patch_labels.cpu().numpy().astype(np.int8)
                )
            for key, value in attrs.items():
                if value is not None:
                    f.attrs[key] = value
    return path
