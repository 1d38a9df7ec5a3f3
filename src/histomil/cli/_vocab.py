"""The CLI vocabulary: one name per idea, and the spellings renamed in this release.

``docs/cli.md`` is generated from these tables and the app (``scripts/gen_cli_docs.py``); the
generator's checks (:func:`histomil.cli._docs.check`) fail when a command breaks a rule below.
"""

from __future__ import annotations

from dataclasses import dataclass

# option -> (meaning, metavar it must show or "" for any). Every option used by more than one
# command is listed here, so a shared name always means the same thing.
VOCABULARY: dict[str, tuple[str, str]] = {
    "--out": (
        "Output folder. Every command that writes has one; inputs are never written into.",
        "DIR",
    ),
    "--patches": ("Folder of patch files `<slide_id>.h5` written by `preprocess`.", "DIR"),
    "--slides": ("Folder holding slide files.", "DIR"),
    "--slide-id": ("One slide's id (its file name without extension).", "ID"),
    "--slide-path": ("One slide file.", "FILE"),
    "--annotations": (
        "Lesion annotations: one file (`.xml`, `.geojson`, `.json`) or a folder "
        "of `<slide_id>.<ext>` files (`label` also takes a manifest CSV).",
        "PATH",
    ),
    "--manifest": ("Manifest CSV (`slide_id`, `label`, ...).", "FILE"),
    "--config": ("Training config (YAML).", "FILE"),
    "--weights": ("A local checkpoint file (nothing is ever downloaded).", "FILE"),
    "--attention": ("Attention file (`.npy`/`.h5`) for a bag.", "FILE"),
    "--target-mpp": ("Resolution of the patches, um/px (the target).", ""),
    "--target-magnification": ("The target as a magnification (20 = 0.5 um/px).", ""),
    "--level0-mpp": ("The slide's own level-0 resolution, um/px.", ""),
    "--patch-size-level0": ("Patch side in level-0 pixels.", ""),
    "--precision": (
        "Compute precision: the values of `train.precision` (`float32`, "
        "`bfloat16`) plus `float16` and `auto`.",
        "",
    ),
    "--dtype": ("Storage dtype of features: `float32` | `float16`.", ""),
    "--workers": ("Parallel tasks (slides, folds, sweep points), run by `--executor`.", ""),
    "--readers": ("`extract` only: patch-reading processes feeding the encoder.", ""),
    "--executor": ("Where tasks run: `local` | `ray`.", ""),
    "--ray-address": ("Ray cluster address.", ""),
    "--ray-timeout": ("Seconds to wait for a Ray cluster to answer (default 30).", ""),
    "--cpus-per-task": ("Ray: CPUs reserved per task (slide or fold).", ""),
    "--overwrite": ("Redo slides whose outputs exist.", ""),
    "--skip-errors": ("Exit 0 when some slides fail (they stay in the status table).", ""),
    "--seed": ("Seed; the same seed gives the same result.", ""),
    "--fold": ("Fold of a training run.", ""),
    "--device": ("`auto` | `cpu` | `cuda`.", ""),
}
# Option names that must never be visible again: they meant different things in different
# commands (issue 19). Each still works, hidden, where it existed.
RETIRED = ("--mpp", "--slide-mpp", "--magnification", "--float16", "--annotation", "--slide")
# The shared precision values (also accepted by train.precision in YAML).
PRECISION_VALUES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Renamed:
    """``old`` on ``command`` still works for one release (hidden), mapped to ``new``."""

    command: str
    old: str
    new: str


RENAMED: tuple[Renamed, ...] = (
    Renamed("preprocess", "--mpp", "--target-mpp"),
    Renamed("preprocess", "--magnification", "--target-magnification"),
    Renamed("preprocess", "--slide-mpp", "--level0-mpp"),
    Renamed("synth slides", "--mpp", "--level0-mpp"),
    Renamed("extract", "--workers", "--readers"),
    Renamed("extract", "--float16", "--dtype float16"),
    Renamed("extract", "--precision fp32|bf16|fp16", "--precision float32|bfloat16|float16"),
    Renamed("heatmap", "--slide", "--slide-id"),
    Renamed("heatmap", "--annotation", "--annotations"),
    Renamed("heatmap", "--out FILE.png", "--out DIR"),
    Renamed("export-qupath", "--slide", "--slide-id"),
    Renamed("export-qupath", "--annotation", "--annotations"),
    Renamed("export-qupath", "--out FILE.geojson", "--out DIR"),
    Renamed("report", "--out FILE.html", "--out DIR"),
    Renamed("label", "(no --out: writes into --patches)", "--out DIR"),
    Renamed("synth slides", "--layout", "--tiff-layout"),
)
# Commands that write nothing (so need no --out). `cluster check` writes small check files under
# its --path folders and removes them again.
READ_ONLY = ("version", "cluster check")
# Commands that call one function of the Python API with the same parameter names.
API_FUNCTIONS = {
    "preprocess": "preprocess",
    "label": "label",
    "extract": "extract",
    "train": "train",
    "heatmap": "heatmap",
}
