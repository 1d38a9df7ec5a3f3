"""``train`` and ``heatmap``: cross-validated training and attention heatmaps, as in the CLI."""

from __future__ import annotations

from pathlib import Path

from histomil.api._common import (
    HeatmapResult,
    PathLike,
    TrainResult,
    absolute,
    annotation_file,
    existing,
)
from histomil.api._common import executor as make_executor


def train(
    config: PathLike,
    out: PathLike,
    *,
    resume: bool = True,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    cpus_per_task: float = 1.0,
    ray_timeout: float = 30.0,
) -> TrainResult:
    """Train and evaluate every fold of the YAML ``config`` into the run folder ``out``.

    The data paths, the model name and its parameters are checked once, before any fold starts
    (and before the run folder is created).
    """
    from histomil.models import check_model_params
    from histomil.training import load_config
    from histomil.training import train as run_training

    cfg = load_config(existing(config, "training config", kind="file"))
    existing(cfg.data.manifest, "manifest (data.manifest)", kind="file")
    existing(cfg.data.bags, "bag folder (data.bags)", kind="dir")
    if cfg.data.labels_dir is not None:
        existing(cfg.data.labels_dir, "labels folder (data.labels_dir)", kind="dir")
    check_model_params(cfg.model.name, cfg.model.params)
    ex = make_executor(
        workers, executor, ray_address, cpus_per_task, ray_timeout, log_dir=absolute(out)
    )
    result = run_training(cfg, absolute(out), ex, resume=resume)
    return TrainResult(
        Path(result.run_dir), tuple(result.folds), result.metrics, result.predictions
    )


def heatmap(
    source: PathLike,
    out: PathLike | None = None,
    *,
    slide_id: str | None = None,
    fold: str | None = None,
    scale: str = "percentile",
    slide_path: PathLike | None = None,
    annotations: PathLike | None = None,
    attention: PathLike | None = None,
    top_k: int = 8,
    patch_size_level0: int | None = None,
) -> HeatmapResult:
    """Attention over the slide thumbnail (PNG in the folder ``out``) plus a top/bottom montage.

    ``source``: a training run folder (with ``slide_id``; ``out`` defaults to ``RUN/heatmaps``),
    one attention file, or a bag file together with ``attention`` (then ``out`` is required:
    inputs are never written into). ``annotations``: the lesion annotation file, or a folder of
    ``<slide_id>.<ext>`` files; default: the annotation recorded when the slide was labelled.
    """
    from histomil.viz.attention import VizError, load_attention
    from histomil.viz.heatmap import (
        HeatmapOptions,
        default_heatmap_path,
        montage_path_for,
        render_heatmap,
    )

    src = existing(source, "heatmap source")
    data = load_attention(src, slide_id, fold, absolute(attention), patch_size_level0)
    name = default_heatmap_path(src, data).name
    if out is None:
        if not src.is_dir():
            raise VizError(
                f"{source} is not a run folder; give an output folder (--out DIR) so the "
                "heatmap is not written next to the input"
            )
        out_dir = src / "heatmaps"
    else:
        out_dir = absolute(out)
    ann = annotation_file(annotations, data.slide_id)
    options = HeatmapOptions(
        scale=scale,
        top_k=top_k,
        slide_path=None if slide_path is None else existing(slide_path, "slide", kind="file"),
        annotation_path=ann,
        attention_path=absolute(attention),
        patch_size_level0=patch_size_level0,
    )
    png = render_heatmap(src, out_dir / name, options, slide_id=slide_id, fold=fold)
    montage = montage_path_for(png)
    return HeatmapResult(out_dir, png, montage if montage.is_file() else None)
