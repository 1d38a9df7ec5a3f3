"""histomil.bags: the per-slide bag file format, CLAM/TRIDENT readers and cohort loading."""

from histomil.bags.bag import UNKNOWN, Bag
from histomil.bags.dataset import bag_to_float32, find_bag, index_bags, load_cohort
from histomil.bags.io import LAYOUTS, BagData, BagError, detect_layout, load_bag, write_bag

__all__ = [
    "LAYOUTS",
    "UNKNOWN",
    "Bag",
    "BagData",
    "BagError",
    "bag_to_float32",
    "detect_layout",
    "find_bag",
    "index_bags",
    "load_bag",
    "load_cohort",
    "write_bag",
]
