"""Share of bags whose thresholded AB-MIL attention falls back to softmax at random init.

Usage: python scripts/threshold_fallback_at_init.py BAGS_DIR  (first 60 bags, 3 init seeds;
forward passes only, in training mode as in the first epoch). docs/experiments.md quotes it.
"""

import glob
import sys

import torch

from histomil.bags.io import load_bag
from histomil.models import create_model

paths = sorted(glob.glob(sys.argv[1] + "/*.h5"))[:60]
feats = [torch.as_tensor(load_bag(p).features, dtype=torch.float32) for p in paths]
sizes = [f.shape[0] for f in feats]
print("bags", len(feats), "patches median", sorted(sizes)[len(sizes) // 2])
for T in (0.25, 0.5, 1.0, 2.0, 5.0):
    shares = []
    for seed in range(3):
        torch.manual_seed(seed)
        m = create_model("abmil", feats[0].shape[1], 1, attention_threshold=T).train()
        m.fallback_events = None
        with torch.no_grad():
            for x in feats:
                m(x)
        shares.append(float(m.fallback_events) / len(feats))
    print(f"T={T}: fallback share per init seed", [round(s, 3) for s in shares])
