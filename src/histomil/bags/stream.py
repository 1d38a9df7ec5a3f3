"""Cohorts larger than memory: bags whose features stay on disk until a training step needs them.

A *lazy* bag carries everything small (labels, coords, overlaps, targets) in memory and, in
place of its features, a zero-byte placeholder of the right shape (N, D) plus
``features_path``. :func:`materialize` reads the features (float32); :func:`prefetch` yields
bags in a given order while a background thread already reads the next ones, so disk reads
overlap with compute (torch releases the GIL inside its kernels). In-memory bags pass through
both unchanged, so the trainer uses the same code for both.

:func:`memory_budget` (``HISTOMIL_MEMORY_GB`` or half of the available RAM) decides, in
:func:`histomil.bags.dataset.load_cohort` with ``stream=None``, whether a cohort is kept in
memory (as stored: float16 files stay float16, half the RAM) or streamed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from histomil.bags.bag import Bag
from histomil.bags.io import OPTIONAL_DATASETS, BagError, load_bag

_H5 = (".h5", ".hdf5")


def stored_dtype(path: str | os.PathLike) -> np.dtype:
    """dtype of the features as stored (float32 for CLAM ``.pt`` files)."""
    path = Path(path)
    if path.suffix not in _H5:
        return np.dtype(np.float32)
    import h5py

    with h5py.File(path, "r") as f:
        return np.dtype(f["features"].dtype)


def feature_nbytes(path: str | os.PathLike) -> int:
    """Bytes the features of one bag file take in memory as stored (from metadata only)."""
    path = Path(path)
    if path.suffix not in _H5:
        return path.stat().st_size
    import h5py

    with h5py.File(path, "r") as f:
        ds = f["features"]
        return int(np.prod(ds.shape)) * ds.dtype.itemsize


def memory_budget() -> int:
    """Bytes of features a cohort may keep in memory: ``HISTOMIL_MEMORY_GB`` or half of
    MemAvailable (Linux), else 8 GB."""
    env = os.environ.get("HISTOMIL_MEMORY_GB")
    if env:
        return int(float(env) * 2**30)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 8 * 2**30


def lazy_bag(path: str | os.PathLike, **fields) -> Bag:
    """A :class:`Bag` of ``path`` without its features in memory (``fields``: label, time...).

    Reads coords and the optional per-patch datasets now; only HDF5 bags can be lazy.
    """
    import h5py
    import torch

    path = Path(path)
    if path.suffix not in _H5:
        raise BagError(f"{path}: only HDF5 bags can be streamed")
    with h5py.File(path, "r") as f:
        if "features" not in f:
            raise BagError(f"{path}: no 'features' dataset")
        shape = tuple(f["features"].shape)
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 2 or shape[0] == 0:
            raise BagError(f"{path}: features shape {shape}; expected (N, D) with N > 0")
        arrays = {
            k: torch.from_numpy(np.asarray(f[k][()]).reshape(-1).astype(dtype))
            for k, dtype in (("coords", np.int64), *OPTIONAL_DATASETS.items())
            if k in f and k != "tissue"
        }
        if "coords" in arrays:
            arrays["coords"] = arrays["coords"].reshape(shape[0], 2)
    placeholder = torch.zeros((), dtype=torch.float16).expand(shape)  # (N, D), no storage
    return Bag(features=placeholder, features_path=os.fspath(path), **arrays, **fields)


def is_lazy(bag: Bag) -> bool:
    return getattr(bag, "features_path", None) is not None


def materialize(bag: Bag) -> Bag:
    """The bag with its float32 features in memory (a no-op for in-memory bags)."""
    if not is_lazy(bag):
        return bag
    import torch

    data = load_bag(bag.features_path)
    if data.features.shape != tuple(bag.features.shape):
        raise BagError(f"{bag.features_path}: features changed on disk since the cohort was loaded")
    return replace(bag, features=torch.from_numpy(data.features), features_path=None)


def prefetch(bags: Sequence[Bag], order: Sequence[int], depth: int = 2) -> Iterator[Bag]:
    """Yield ``bags[i]`` for ``i`` in ``order``, materialised; lazy bags are read ``depth``
    steps ahead in one background thread."""
    if not any(is_lazy(bags[i]) for i in order):
        for i in order:
            yield bags[i]
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bag-prefetch") as pool:
        pending = [pool.submit(materialize, bags[i]) for i in order[:depth]]
        for k in range(len(order)):
            bag = pending.pop(0).result()
            if k + depth < len(order):
                pending.append(pool.submit(materialize, bags[order[k + depth]]))
            yield bag
