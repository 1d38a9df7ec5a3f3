"""Sizes, paths and the settings record of a demo directory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REAL_SLIDE_RELATIVE = Path("shared") / "data" / "slides" / "CMU-1-Small-Region.svs"
METHODS = ("abmil", "rank_induction", "mhim_v2")
METHOD_TITLES = {
    "abmil": "AB-MIL",
    "rank_induction": "Rank induction (AB-MIL + rank loss)",
    "mhim_v2": "MHIM-v2 (AB-MIL student)",
}


@dataclass(frozen=True, kw_only=True)
class DemoSettings:
    """How big the demo cohort is and how long models train.

    ``n_slides`` synthetic slides of ``slide_size`` level-0 px at 0.5 um/px (half positive);
    patches of ``patch_size`` px at 20x; ``folds``-fold cross-validation (each fold tests its
    own slides, validation is ``val_fraction`` of the rest); early stopping settings.

    ``lr``: Adam learning rate (the papers' 2e-4). Random-weight ``resnet50_trunc`` features are
    small (mean ~0.04), so models sit on a plateau for ~20-30 epochs before the losses fall: the
    full run keeps a 30-epoch warm-up before early stopping. (At 2e-3 AB-MIL collapsed to a
    constant output and never left the plateau.)

    ``lesion_contrast`` / ``lesion_scale``: how distinct and how large lesions are
    (:class:`histomil.synth.slides.SlideSynthConfig`); 1 / 1 is the original look, on which the
    full run saturated (4 of 5 folds at test AUROC 1.000). The full run uses contrast 0.75,
    chosen with ``scripts/tune_cohorts.py demo`` on a separate seed from validation AUROC only
    (docs/synthetic.md); the quick run keeps 1 / 1 (it checks the pipeline, not the methods).
    """

    n_slides: int
    slide_size: tuple[int, int]
    patch_size: int
    folds: int
    max_epochs: int
    warmup_epochs: int
    patience: int
    val_fraction: float = 0.25
    lr: float = 2.0e-4
    lesion_contrast: float = 1.0
    lesion_scale: float = 1.0


# Patches of 112 px at 20x (not the papers' 224) cut the encoder's work by 4 so the full demo
# fits in minutes on 2 CPU cores; 56 um fields still hold many nuclei.
QUICK = DemoSettings(
    n_slides=12, slide_size=(1600, 1200), patch_size=112, folds=3,
    max_epochs=12, warmup_epochs=4, patience=3,
)  # fmt: skip
FULL = DemoSettings(
    n_slides=40, slide_size=(3000, 2250), patch_size=112, folds=5,
    max_epochs=60, warmup_epochs=30, patience=7, lesion_contrast=0.75,
)  # fmt: skip


@dataclass(frozen=True)
class DemoPaths:
    """Where each step of the demo writes."""

    root: Path

    @property
    def synthetic(self) -> Path:
        return self.root / "synthetic"

    @property
    def manifest(self) -> Path:
        return self.synthetic / "manifest.csv"

    @property
    def preprocess(self) -> Path:
        """Patch files, tissue polygons, thumbnails and (after extraction) bags."""
        return self.root / "preprocess"

    @property
    def patches(self) -> Path:
        return self.preprocess / "patches"

    @property
    def bags(self) -> Path:
        return self.preprocess / "bags"

    @property
    def real(self) -> Path:
        return self.root / "real_slide"

    @property
    def results(self) -> Path:
        """The experiment folder: configs, runs, table, heatmaps, QuPath export, report."""
        return self.root / "results"

    def run(self, method: str) -> Path:
        return self.results / "runs" / method

    @property
    def record(self) -> Path:
        return self.root / "demo.json"


def find_real_slide() -> Path | None:
    """The shared real slide, looked up next to the repository and next to the working directory
    (``HISTOMIL_SHARED_DATA`` overrides the data folder)."""
    env = os.environ.get("HISTOMIL_SHARED_DATA")
    candidates = [Path(env) / "slides" / REAL_SLIDE_RELATIVE.name] if env else []
    repo_root = Path(__file__).resolve().parents[3]
    for base in (repo_root, Path.cwd()):
        candidates += [base.parent / REAL_SLIDE_RELATIVE, base / REAL_SLIDE_RELATIVE]
    return next((p.resolve() for p in candidates if p.is_file()), None)


def demo_identity(settings: DemoSettings, seed: int, weights: Path | None) -> dict[str, Any]:
    """What the data of a demo directory depends on (checked before resuming); training settings
    are guarded by each run's own config check."""
    return {
        "n_slides": settings.n_slides,
        "slide_size": list(settings.slide_size),
        "patch_size": settings.patch_size,
        "lesion_contrast": settings.lesion_contrast,
        "lesion_scale": settings.lesion_scale,
        "seed": seed,
        "encoder": "resnet50_trunc",
        "weights": str(Path(weights).resolve()) if weights else "random",
    }


def check_or_write_record(paths: DemoPaths, identity: dict[str, Any]) -> bool:
    """Write ``demo.json`` for a new directory; for an existing one, refuse other settings.

    Returns True when resuming an earlier demo with the same settings.
    """
    from histomil._io import atomic_write_json

    if paths.record.is_file():
        old = json.loads(paths.record.read_text())
        if old.get("identity") != identity:
            raise ValueError(
                f"{paths.root} holds a demo made with other settings ({old.get('identity')}); "
                f"now asked: {identity}. Use another --out or delete that folder."
            )
        return True
    atomic_write_json(paths.record, {"identity": identity})
    return False
