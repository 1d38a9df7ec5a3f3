"""Train chosen folds of MHIM-v2 ablation variants against a finished baseline run.

Usage: python scripts/mhim_variant_folds.py EXPERIMENT_DIR VARIANT FOLDS [SHARED_PARAMS_JSON]

``EXPERIMENT_DIR`` is a ``histomil experiment mhim-ablation`` folder whose
``runs/abmil__baseline`` holds the baseline; the variant is written to
``runs/abmil__<VARIANT>`` with the config the experiment itself would resolve (the baseline's
config with ``objective: mhim_v2``, the shared params merged with the variant's, and
``objective.baseline`` = the baseline run), so the experiment command reuses these folds. ``FOLDS``:
comma-separated fold numbers, trained one after the other (the baseline fold must be finished).
Used for the issue-15 reruns when a machine cannot train every fold of every variant.

``VARIANT`` ``baseline`` trains folds of ``runs/abmil__baseline`` itself with the config the
experiment wrote there (start ``histomil experiment mhim-ablation --grid baseline``, stop it once
``runs/abmil__baseline/config.yaml`` exists, then train the folds in parallel processes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from histomil.experiments.mhim import VARIANTS, _merge
from histomil.training.config import config_from_dict
from histomil.training.run import train


def main() -> None:
    exp, variant, folds = Path(sys.argv[1]).resolve(), sys.argv[2], sys.argv[3]
    shared = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    base_dir = exp / "runs" / "abmil__baseline"
    raw = yaml.safe_load((base_dir / "config.yaml").read_text(encoding="utf-8"))
    if variant == "baseline":
        for fold in (int(f) for f in folds.split(",")):
            train(config_from_dict(raw), base_dir, folds=[fold])
        return
    params = _merge(shared, VARIANTS[variant])
    raw["objective"] = {"name": "mhim_v2", "params": params, "baseline": str(base_dir)}
    config = config_from_dict(raw)
    for fold in (int(f) for f in folds.split(",")):
        train(config, exp / "runs" / f"abmil__{variant}", folds=[fold])


if __name__ == "__main__":
    main()
