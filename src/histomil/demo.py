"""`histomil demo`: run the pipeline, as far as it exists, on a small synthetic cohort.

A clear sequence of steps, each a library call writing into ``out``; later stages (labelling,
feature extraction, training, reports) append their own steps to :func:`run_demo`.

1. synthetic slides with lesion annotations (``out/synthetic``);
2. preprocessing of those slides and, when present, the real slide
   ``../shared/data/slides/CMU-1-Small-Region.svs`` (``out/preprocess``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import typer

REAL_SLIDE_RELATIVE = Path("shared") / "data" / "slides" / "CMU-1-Small-Region.svs"


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
        return self.root / "preprocess"


def find_real_slide() -> Path | None:
    """The shared real slide, looked up next to the repository and next to the working directory
    (``HISTOMIL_SHARED_DATA`` overrides the data folder)."""
    env = os.environ.get("HISTOMIL_SHARED_DATA")
    candidates = [Path(env) / "slides" / REAL_SLIDE_RELATIVE.name] if env else []
    repo_root = Path(__file__).resolve().parents[2]
    for base in (repo_root, Path.cwd()):
        candidates += [base.parent / REAL_SLIDE_RELATIVE, base / REAL_SLIDE_RELATIVE]
    return next((p for p in candidates if p.is_file()), None)


def step_synthetic_slides(paths: DemoPaths, quick: bool, seed: int) -> Path:
    """Step 1: small pyramidal TIFFs (half positive) with ASAP XML / GeoJSON lesions."""
    from histomil.slides.synth import SynthConfig, make_synthetic_slides

    n, size = (4, (1600, 1200)) if quick else (8, (3000, 2250))
    return make_synthetic_slides(paths.synthetic, n, seed, SynthConfig(size=size), 0.5)


def step_preprocess(paths: DemoPaths, real_slide: Path | None, workers: int = 2):
    """Step 2: tissue segmentation and 224-px tiling at 20x of every slide."""
    from histomil.executors import ExecutorConfig
    from histomil.slides.preprocess import PreprocessConfig, preprocess_slides

    inputs: list[Path] = [paths.manifest] + ([real_slide] if real_slide else [])
    workers = max(1, min(workers, os.cpu_count() or 1))
    return preprocess_slides(
        inputs, paths.preprocess, PreprocessConfig(), ExecutorConfig(workers=workers)
    )


def run_demo(out: Path, quick: bool = False, seed: int = 0) -> None:
    """Run every demo step into ``out`` and print where the results are."""
    paths = DemoPaths(Path(out))
    paths.root.mkdir(parents=True, exist_ok=True)
    typer.echo(f"[1] synthetic slides -> {paths.synthetic}")
    step_synthetic_slides(paths, quick, seed)
    real = find_real_slide()
    if real is None:
        typer.echo(
            "    (real slide ../shared/data/slides/CMU-1-Small-Region.svs not found; skipped)"
        )
    typer.echo(f"[2] preprocess -> {paths.preprocess}")
    table = step_preprocess(paths, real)
    for row in table.itertuples():
        typer.echo(f"    {row.slide_id:<22} {row.status:<8} {row.n_patches:>5} patches")
    typer.echo(
        f"done. Patch files: {paths.preprocess / 'patches'}; thumbnails with tissue contour and "
        f"patch grid: {paths.preprocess / 'thumbnails'}; status: {paths.preprocess / 'preprocess.csv'}"
    )
