"""`histomil demo`: the whole pipeline on a small synthetic cohort, in minutes on a laptop CPU.

A clear sequence of named steps, each a library call writing into ``out`` (resumable where the
step is: finished slides, bags and folds are skipped on a rerun):

1. synthetic slides with lesion annotations (``out/synthetic``);
2. preprocessing: tissue + patch grid of those slides (``out/preprocess``) and, when present,
   of the real slide ``../shared/data/slides/CMU-1-Small-Region.svs`` (``out/real_slide``);
3. patch labels from the annotations; 4. ResNet-50 (layer3) features into bag files;
5. AB-MIL, rank induction and MHIM-v2 on the same k folds (``out/results/runs/<method>``)
   and a results table; 6. heatmaps, a QuPath export and HTML reports (``out/results``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from histomil.demo.data import (
    ENCODER,
    feature_separation,
    step_extract,
    step_label,
    step_preprocess,
    step_synthetic_slides,
)
from histomil.demo.settings import (
    FULL,
    METHOD_TITLES,
    METHODS,
    QUICK,
    DemoPaths,
    DemoSettings,
    check_or_write_record,
    demo_identity,
    find_real_slide,
)

__all__ = [
    "FULL",
    "QUICK",
    "DemoPaths",
    "DemoSettings",
    "find_real_slide",
    "run_demo",
    "step_preprocess",
    "step_synthetic_slides",
]

T = TypeVar("T")


def encoder_statement(weights: Path | None, seed: int) -> str:
    """Which encoder and weights the demo uses, and why its results mean something."""
    if weights is not None:
        return (
            f"Encoder: {ENCODER} (ResNet-50 up to layer3 + average pooling, 1024-d; the encoder of "
            f"both papers) with the local checkpoint {weights}."
        )
    return (
        f"Encoder: {ENCODER} (ResNet-50 up to layer3 + average pooling, 1024-d; the encoder of "
        f"both papers) with RANDOM weights (seed {seed}), recorded as encoder_weights='random' in "
        "every bag. Pretrained weights cannot be downloaded here (pass --weights PATH to use a "
        "local ResNet-50 checkpoint). Random convolutional filters still measure colour and "
        "texture statistics, and the synthetic lesions differ from normal tissue exactly there "
        "(dense, large, dark nuclei on purple stroma), so lesion and normal patches separate in "
        "feature space (checked after extraction) and the MIL comparison is meaningful for this "
        "cohort. It says nothing about real-tissue performance."
    )


class _Steps:
    """Numbered step headers, wall time per step, all through one rich console."""

    def __init__(self, console: Any, total: int) -> None:
        self.console, self.total, self.index = console, total, 0
        self.seconds: dict[str, float] = {}

    def run(self, title: str, fn: Callable[[], T]) -> T:
        self.index += 1
        self.console.rule(f"[bold][{self.index}/{self.total}] {title}", align="left")
        start = time.perf_counter()
        value = fn()
        self.seconds[title] = round(time.perf_counter() - start, 1)
        self.console.print(f"[dim]    {self.seconds[title]:.1f} s[/dim]")
        return value


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=120)


def run_demo(
    out: Path,
    quick: bool = False,
    seed: int = 0,
    weights: Path | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Run every demo step into ``out``, print a results table and where everything is.

    ``quick``: 12 small slides and short training (tests); ``weights``: a local ResNet-50
    checkpoint instead of seeded random weights; ``workers``: processes for slides and folds.
    Returns the summary also written to ``out/results/demo_summary.json``.
    """
    from histomil._io import atomic_write_json

    settings: DemoSettings = QUICK if quick else FULL
    paths = DemoPaths(Path(out).resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights}: no such file")
    resumed = check_or_write_record(paths, demo_identity(settings, seed, weights))
    console = _console()
    started = time.perf_counter()
    console.print(
        f"[bold]histomil demo[/bold] ({'quick' if quick else 'full'}): {settings.n_slides} synthetic "
        f"slides of {settings.slide_size[0]}x{settings.slide_size[1]} px at 0.5 um/px, "
        f"{settings.patch_size}-px patches at 20x, {settings.folds}-fold cross-validation, "
        f"seed {seed} -> {paths.root}" + (" (resuming)" if resumed else "")
    )
    console.print(encoder_statement(weights, seed))
    steps = _Steps(console, 8)
    real = find_real_slide()
    steps.run(
        "synthetic slides with lesion annotations",
        lambda: step_synthetic_slides(paths, quick, seed, settings),
    )
    pre = steps.run(
        "preprocess: tissue segmentation + patch grid",
        lambda: step_preprocess(paths, real, workers, settings),
    )
    _print_preprocess(console, pre, real, paths)
    labels = steps.run("label patches from the annotations", lambda: step_label(paths, workers))
    console.print(
        f"    {int(labels['n_lesion'].sum())} lesion patches on "
        f"{int(labels['annotated'].fillna(False).astype(bool).sum())} annotated positive slides "
        f"(of {int(labels['n_patches'].sum())} patches)"
    )
    extracted = steps.run(
        f"extract features ({ENCODER})", lambda: step_extract(paths, seed, weights)
    )
    separation = feature_separation(paths)
    _print_extract(console, extracted, separation)
    from histomil.demo.training import results_table, train_method, write_results

    for method in METHODS:
        steps.run(
            f"train {METHOD_TITLES[method]}",
            lambda m=method: train_method(m, paths, settings, seed, workers),
        )
    table = results_table(paths)
    note = (
        f"Mean ± sd over {settings.folds} folds (each fold tests its own slides; thresholds and "
        "early stopping use validation slides only). Localization on positive test slides: "
        "'top patch in lesion' = pointing game at alpha 1 %, 'lesion Dice@100%' = overlap of "
        "the top-L attention patches with the L annotated lesion patches (ranked by raw attention "
        "scores). " + encoder_statement(weights, seed)
    )
    write_results(paths, table, note)
    _print_table(console, table, settings)
    if quick:
        console.print(
            "    [yellow]--quick checks the pipeline only: 6-8 training slides and "
            f"{settings.max_epochs} epochs are too few for meaningful numbers (models are still "
            "on their initial plateau); run without --quick for the comparison.[/yellow]"
        )
    outputs = steps.run("heatmaps, QuPath export, HTML reports", lambda: _outputs(paths))
    summary = {
        "out": str(paths.root),
        "quick": quick,
        "seed": seed,
        "encoder": ENCODER,
        "weights": str(weights) if weights else "random",
        "feature_separation": separation,
        "results": json.loads(table.to_json(orient="records")),
        "seconds": steps.seconds,
        "total_seconds": round(time.perf_counter() - started, 1),
        "outputs": {k: str(v) for k, v in outputs.items()},
    }
    atomic_write_json(paths.results / "demo_summary.json", summary)
    _print_where(console, paths, outputs, summary["total_seconds"])
    return summary


def _outputs(paths: DemoPaths) -> dict[str, Path]:
    from histomil.demo.outputs import (
        copy_tiling_figures,
        pick_slides,
        step_heatmaps,
        step_qupath,
        step_reports,
    )

    picks = pick_slides(paths.run("rank_induction"))
    heatmaps = step_heatmaps(paths, picks)
    found: dict[str, Path] = {}
    if "positive" in picks:
        found["qupath"] = step_qupath(paths, "rank_induction", *picks["positive"])
        copy_tiling_figures(paths, [picks["positive"][0]])
    else:
        copy_tiling_figures(paths, [])
    report, runs = step_reports(paths, "histomil demo: AB-MIL vs rank induction vs MHIM-v2")
    found["report"] = report
    found.update({f"report_{m}": p for m, p in runs.items()})
    found.update({f"heatmap_{i}": p for i, p in enumerate(heatmaps)})
    return found


def _print_preprocess(console: Any, table: Any, real: Path | None, paths: DemoPaths) -> None:
    synth = table[table["slide_id"].str.startswith("synth_")]
    console.print(
        f"    {len(synth)} synthetic slides: {int(synth['n_patches'].sum())} patches "
        f"({synth['n_patches'].min()}-{synth['n_patches'].max()} per slide; status "
        f"{', '.join(f'{k} {v}' for k, v in synth['status'].value_counts().items())})"
    )
    if real is None:
        console.print(
            "    real slide ../shared/data/slides/CMU-1-Small-Region.svs not found: skipped"
        )
        return
    for row in table[~table["slide_id"].str.startswith("synth_")].itertuples():
        console.print(
            f"    real slide {row.slide_id}: {row.status}, {row.n_patches} patches of 224 px at "
            f"20x; overview: {paths.real / 'thumbnails' / (row.slide_id + '.png')}"
        )


def _print_extract(console: Any, rows: list[dict], separation: dict[str, float]) -> None:
    done = [r for r in rows if r.get("status") == "done"]
    n = sum(int(r.get("n_patches") or 0) for r in rows)
    secs = sum(float(r.get("seconds") or 0) for r in done)
    rate = f", {sum(int(r['n_patches']) for r in done) / secs:.1f} patches/s" if secs else ""
    console.print(f"    {len(rows)} bags, {n} patches ({len(done)} extracted now{rate})")
    if separation:
        console.print(
            f"    feature check (annotated patches, not a model result): the lesion-minus-normal "
            f"mean direction separates {separation['lesion_patches']} lesion from "
            f"{separation['patches'] - separation['lesion_patches']} normal patches with AUROC "
            f"{separation['direction_auroc']:.3f}; {100 * separation['share_dims_d_gt_1']:.0f} % "
            "of the 1024 dimensions differ by more than one sd"
        )


def _print_table(console: Any, table: Any, settings: DemoSettings) -> None:
    from rich.table import Table

    from histomil.demo.training import COLUMN_TITLES, TABLE_COLUMNS, table_caption
    from histomil.evaluation.stats import fmt_mean_sd

    rich_table = Table(title=table_caption(table), title_justify="left")
    rich_table.add_column("method", no_wrap=True)
    for c in TABLE_COLUMNS:
        rich_table.add_column(COLUMN_TITLES[c], justify="right", no_wrap=True)
    for r in table.itertuples():
        rich_table.add_row(
            r.title,
            *(fmt_mean_sd(getattr(r, f"{c}_mean"), getattr(r, f"{c}_sd")) for c in TABLE_COLUMNS),
        )
    console.print(rich_table)


def _print_where(console: Any, paths: DemoPaths, outputs: dict[str, Path], seconds: float) -> None:
    heatmap = outputs.get("heatmap_1") or outputs.get("heatmap_0")
    console.rule(f"[bold]done in {seconds:.0f} s", align="left")
    console.print("[bold]Open first:[/bold]")
    console.print(f"  1. the report:  {outputs['report']}")
    if heatmap is not None:
        console.print(f"  2. a heatmap:   {heatmap}")
    if "qupath" in outputs:
        console.print(
            f"  3. QuPath:      {outputs['qupath']} (File > Import objects, on the slide in {paths.synthetic / 'slides'})"
        )
    console.print("[bold]Everything:[/bold]")
    for path, what in (
        (paths.synthetic, "synthetic slides (TIFF), ASAP XML / GeoJSON lesions, manifest.csv"),
        (
            paths.preprocess,
            "patches/, tissue/, thumbnails/, labels/ (labelled patch files, label.csv), bags/ "
            "(features), preprocess.csv, extract.csv",
        ),
        (paths.real, "the real slide's tissue + patch grid (thumbnails/)"),
        (paths.results / "configs", "training configs"),
        (
            paths.results / "runs",
            "one run per method: metrics.json, predictions.csv, attention, report.html",
        ),
        (
            paths.results,
            "table.md, results.csv, heatmaps, QuPath GeoJSON, report.html, demo_summary.json",
        ),
    ):
        if path.exists():
            console.print(f"  {path}  [dim]{what}[/dim]")
