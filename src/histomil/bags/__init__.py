"""histomil.bags: the per-slide bag file format, CLAM/TRIDENT readers and cohort loading.

Names are loaded on first use (PEP 562): `histomil.bags.layouts` and `histomil.bags.io` are
needed by preprocessing, which must not import torch (`Bag` and cohort loading do).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "UNKNOWN": "bag",
    "Bag": "bag",
    "bag_file_attrs": "dataset",
    "bag_to_float32": "dataset",
    "find_bag": "dataset",
    "index_bags": "dataset",
    "load_cohort": "dataset",
    "LAYOUTS": "io",
    "BagData": "io",
    "BagError": "io",
    "detect_layout": "io",
    "grid_pitch": "io",
    "load_bag": "io",
    "read_bag_attrs": "io",
    "write_bag": "io",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'histomil.bags' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"histomil.bags.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
