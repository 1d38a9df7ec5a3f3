"""Patch files -> bag files: read patches in DataLoader workers, encode in batches, write atomically.

``extract_dir`` runs one task per slide through :func:`histomil.executors.run_tasks`, skips slides
whose bag was made from the same inputs (refuses or, with ``overwrite``, recomputes the others:
:mod:`histomil.features.reruns`), isolates failures and keeps ``OUT/extract.csv`` up to date.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from histomil._io import atomic_path, atomic_write_text
from histomil.executors import (
    BatchError,
    ExecutorConfig,
    Task,
    TaskResult,
    one_line,
    run_tasks,
    write_error_log,
)
from histomil.features.encoders import Encoder, WeightsSpec, create_encoder, describe
from histomil.features.patches import PatchDataset, make_loader, read_patch_file
from histomil.features.reruns import EMPTY_MESSAGE, bag_path_for, plan_extraction

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
STATUS_COLUMNS = ("slide_id", "status", "n_patches", "seconds", "patches_per_s", "bag", "error")
ERROR_LOG = "extract_errors.log"


@dataclass(frozen=True)
class ExtractConfig:
    """How to extract: encoder and weights, batching, reader workers, device and precision.

    ``storage_dtype`` float32|float16 is how features are stored in the bag file;
    ``export_pt`` also writes CLAM-style ``pt_files/<id>.pt``; ``slides_dir`` relocates slides
    whose recorded path is gone (and finds the slides of CLAM/TRIDENT patch files); ``layout``
    histomil|clam|trident picks the output folders (:mod:`histomil.bags.layouts`).
    """

    encoder: str = "resnet50_trunc"
    weights: WeightsSpec = field(default_factory=WeightsSpec)
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"
    storage_dtype: str = "float32"
    export_pt: bool = False
    overwrite: bool = False
    slides_dir: str | None = None
    progress: bool = True
    layout: str = "histomil"

    def __post_init__(self) -> None:
        from histomil.bags.layouts import OUTPUT_LAYOUTS

        if self.layout not in OUTPUT_LAYOUTS:
            raise ValueError(f"layout must be one of {OUTPUT_LAYOUTS}, got {self.layout!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError("batch_size must be >= 1 and workers >= 0")


def resolve_device(device: str):
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked but no CUDA GPU is visible; use --device cpu")
    return torch.device(device)


def _wants_gpu(device: str) -> bool:
    """Ray tasks ask for a GPU for ``cuda`` (decided on the workers, not this driver) or for
    ``auto`` when this machine has one."""
    import torch

    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def resolve_precision(precision: str, device) -> str:
    """``auto`` -> bf16 where the device runs it natively (recent CPUs, Ampere+ GPUs), else
    fp16 on older GPUs and fp32 on CPUs without bf16. An explicit bf16 on a CPU that only
    emulates it runs, with a warning that it is slower (:mod:`histomil.hardware`); on a GPU
    without bf16 it is an error."""
    from histomil.hardware import native_bf16, warn_if_emulated_bf16

    bf16 = native_bf16(device)
    if precision == "auto":
        return "bf16" if bf16 else ("fp16" if device.type == "cuda" else "fp32")
    if precision == "bf16" and not bf16:
        if device.type == "cuda":
            raise RuntimeError("bf16 is not supported on this GPU; use --precision float32")
        warn_if_emulated_bf16(device)
    if precision == "fp16" and device.type != "cuda":
        raise RuntimeError("fp16 autocast is only offered on CUDA; use bf16 or fp32 on CPU")
    return precision


class Runner:
    """An encoder placed on a device, channels-last, with input normalisation and autocast.

    ``runner(batch)`` maps uint8 (B, 3, S, S) to float32 (B, D) on the CPU.
    """

    def __init__(self, encoder: Encoder, device, precision: str) -> None:
        import torch

        self.encoder = encoder
        self.device = device
        self.precision = precision
        self.model = encoder.model.to(device).to(memory_format=torch.channels_last)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(encoder.mean, device=device).view(shape) * 255.0
        self.std = torch.tensor(encoder.std, device=device).view(shape) * 255.0
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def prepare(self, batch):
        """uint8 (B, 3, S, S) -> normalised float32 (B, 3, S', S') channels-last on the device."""
        import torch
        import torch.nn.functional as F

        x = batch.to(self.device, non_blocking=True).float()
        size = self.encoder.input_size
        resize = self.encoder.resize or size
        if resize is not None and x.shape[-1] != resize:
            x = F.interpolate(
                x, size=(resize, resize), mode=self.encoder.interpolation, antialias=True
            ).clamp_(0, 255)
        if size is not None and x.shape[-1] > size:  # centre crop (e.g. GigaPath: 256 -> 224)
            top = (x.shape[-1] - size) // 2
            x = x[..., top : top + size, top : top + size]
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, x):
        """Normalised float (B, 3, S, S) -> float32 (B, D) on the CPU."""
        import torch

        with torch.inference_mode():
            if self.dtype is None:
                out = self.model(x)
            else:
                with torch.autocast(self.device.type, dtype=self.dtype):
                    out = self.model(x)
        return out.float().reshape(out.shape[0], -1).cpu()

    def __call__(self, batch):
        import torch

        with torch.inference_mode():
            return self.forward(self.prepare(batch))


_RUNNERS: dict[tuple, Runner] = {}


def get_runner(config: ExtractConfig) -> Runner:
    """Build (once per process) the runner for ``config``'s encoder, weights, device, precision."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    w = config.weights
    key = (config.encoder, str(w.path), w.random, w.seed, str(device), precision)
    if key not in _RUNNERS:
        _RUNNERS.clear()  # keep at most one model in memory
        _RUNNERS[key] = Runner(create_encoder(config.encoder, w), device, precision)
    return _RUNNERS[key]


def encode_batches(
    runner: Runner,
    batches: Iterable,
    n_total: int,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Encode uint8 (B, 3, S, S) batches into a float32 (n_total, D) array, in order."""
    out = np.empty((n_total, runner.encoder.feature_dim), dtype=np.float32)
    done = 0
    for batch in batches:
        feats = runner(batch).numpy()
        out[done : done + len(feats)] = feats
        done += len(feats)
        if on_batch is not None:
            on_batch(len(feats))
    if done != n_total:
        raise RuntimeError(f"encoded {done} patches, expected {n_total}")
    return out


def _cached_weights(config: ExtractConfig) -> Callable[[], str]:
    """The identity of weights the encoder found in the local caches, built on first call."""
    return lambda: get_runner(config).encoder.weights


def extract_slide(
    patch_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: ExtractConfig,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Encode one slide's patches into ``OUT/bags/<slide_id>.h5``.

    ``provenance`` is what the bag will record (:func:`~histomil.features.reruns.bag_provenance`)
    when the caller already decided to compute it; without it the decision is made here (skip a
    bag made from the same inputs, refuse or, with ``config.overwrite``, replace one made from
    others). A patch file without patches gives status ``empty`` and no bag. Returns a status
    row (see ``STATUS_COLUMNS``). The bag is written only when every patch was encoded,
    atomically, so an interrupted run leaves no partial file.
    """
    import json

    import torch

    from histomil.bags.io import load_bag, write_bag
    from histomil.bags.layouts import layout_attrs
    from histomil.features.reruns import HOW, bag_provenance, weights_record
    from histomil.provenance import H5_ATTR, decide, normalise, read_h5

    start = time.perf_counter()
    pf = read_patch_file(patch_file, config.slides_dir)
    bag_path = bag_path_for(out_dir, pf.slide_id, config)
    export_pt = config.export_pt or config.layout == "clam"
    row = {"slide_id": pf.slide_id, "bag": str(bag_path), "n_patches": len(pf.coords)}
    if len(pf.coords) == 0:
        return {**row, "bag": "", "status": "empty", "error": EMPTY_MESSAGE}
    if provenance is None:
        provenance = bag_provenance(pf, config, weights_record(config, _cached_weights(config)))
        recorded = read_h5(bag_path) if bag_path.is_file() else None
        if decide(bag_path, recorded, provenance, config.overwrite, how=HOW) == "skip":
            if export_pt:
                _export_pt(out_dir, pf.slide_id, load_bag(bag_path).features)
            return {**row, "status": "skipped", "seconds": 0.0, "patches_per_s": 0.0}
    runner = get_runner(config)
    dataset = PatchDataset(pf.slide_path, pf.coords, pf.tile_spec(), pf.attrs.get("level0_mpp"))
    workers = min(config.workers, max(0, len(pf.coords) // config.batch_size))
    loader = make_loader(dataset, config.batch_size, workers, runner.device.type == "cuda")
    with _progress(pf.slide_id, len(pf.coords), config.progress) as advance:
        features = encode_batches(runner, loader, len(pf.coords), advance)
    attrs = {k: v for k, v in pf.attrs.items() if k not in ("histomil_version", H5_ATTR)}
    attrs["slide_id"] = pf.slide_id
    attrs.update(describe(runner.encoder))
    attrs.update(
        precision=runner.precision,
        patch_file=str(pf.path),
        torch_version=torch.__version__,
    )
    attrs[H5_ATTR] = json.dumps(normalise(provenance), sort_keys=True)
    write_bag(
        bag_path,
        features,
        pf.coords,
        attrs=attrs,
        dtype=config.storage_dtype,
        dataset_attrs=layout_attrs(config.layout, attrs, bag_path, runner.encoder.name),
        **{k: v for k, v in pf.extras.items()},
    )
    if export_pt:
        _export_pt(out_dir, pf.slide_id, features, replace=True)
    seconds = time.perf_counter() - start
    rate = len(pf.coords) / seconds if seconds > 0 else 0.0
    return {**row, "status": "done", "seconds": round(seconds, 3), "patches_per_s": round(rate, 2)}


def _export_pt(out_dir, slide_id: str, features: np.ndarray, replace: bool = False) -> None:
    """CLAM-style ``pt_files/<id>.pt``: a bare float32 (N, D) tensor (kept when it exists,
    unless ``replace``: it was just re-extracted)."""
    import torch

    target = Path(out_dir) / "pt_files" / f"{slide_id}.pt"
    if target.exists() and not replace:
        return
    with atomic_path(target) as tmp:
        torch.save(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)), tmp)


class _progress:
    """A rich progress bar with patches/s for one slide; yields an ``advance(n)`` callback."""

    def __init__(self, slide_id: str, total: int, enabled: bool) -> None:
        self.slide_id, self.total, self.enabled = slide_id, total, enabled
        self.bar = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(
            TextColumn(f"[bold]{self.slide_id}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            transient=True,
        )
        task = self.bar.add_task("encode", total=self.total, rate="")
        t0 = time.perf_counter()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            rate = done[0] / max(time.perf_counter() - t0, 1e-9)
            self.bar.update(task, advance=n, rate=f"{rate:.1f} patches/s")

        self.bar.start()
        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def extract_dir(
    patches_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: ExtractConfig,
    executor: ExecutorConfig | None = None,
    skip_errors: bool = False,
) -> list[dict[str, Any]]:
    """Extract every ``patches_dir/*.h5`` into ``out_dir/bags``; write ``out_dir/extract.csv``.

    Every slide is decided before anything is written (:mod:`histomil.features.reruns`): a bag
    made from the same patch file, slide, weights and settings is ``skipped``; one made from
    others is refused with :class:`~histomil.provenance.StaleOutputError` naming what changed,
    or re-extracted with ``config.overwrite``; a patch file without patches is ``empty`` (no
    bag, not an error). Slides run one after another locally (the DataLoader workers give the
    parallelism) or one Ray task per slide. A failing slide never stops the others; unless
    ``skip_errors``, a :class:`~histomil.executors.BatchError` listing the failures is raised
    at the end. Status rows hold one-line errors; tracebacks go to ``extract_errors.log``.
    """
    patches_dir, out_dir = Path(patches_dir), Path(out_dir)
    if not patches_dir.is_dir():
        raise FileNotFoundError(
            f"patches folder {patches_dir} does not exist; run `histomil preprocess` first"
        )
    files = sorted(p for p in patches_dir.glob("*.h5") if not p.name.startswith("."))
    if not files:
        others = sorted(p.name for p in patches_dir.iterdir() if not p.name.startswith("."))
        there = f"it holds {', '.join(others[:5])}" if others else "it is empty"
        raise FileNotFoundError(
            f"no patch files (*.h5) in {patches_dir} ({there}); run `histomil preprocess` first"
        )
    from histomil.features.encoders_foundation import check_weights

    check_weights(config.encoder, config.weights)  # a missing checkpoint fails before any slide
    plan = plan_extraction(files, out_dir, config, _cached_weights(config))
    plan.raise_problems(out_dir)
    executor = executor or ExecutorConfig()
    if executor.executor == "ray" and _wants_gpu(config.device):
        executor = replace(executor, num_gpus_per_task=1.0)  # one encoder per GPU
    if config.export_pt or config.layout == "clam":
        from histomil.bags.io import load_bag

        for row in plan.rows.values():
            if row["status"] == "skipped":
                _export_pt(out_dir, row["slide_id"], load_bag(row["bag"]).features)
    tasks = [
        Task(
            key=p.stem,
            fn=extract_slide,
            kwargs={"patch_file": p, "out_dir": out_dir, "config": config, "provenance": prov},
        )
        for p, prov in plan.todo
    ]
    order = [p.stem for p in files]
    rows: dict[str, dict[str, Any]] = dict(plan.rows)
    errors: dict[str, str] = {}

    def ordered() -> list[dict[str, Any]]:
        return [rows[k] for k in order if k in rows]

    def on_result(result: TaskResult) -> None:
        if result.ok:
            rows[result.key] = result.value
        else:
            rows[result.key] = {
                "slide_id": result.key,
                "status": "failed",
                "error": one_line(result.error),
            }
            errors[result.key] = result.error or ""
            write_error_log(out_dir / ERROR_LOG, errors)
        write_status(out_dir / "extract.csv", ordered())

    out_dir.mkdir(parents=True, exist_ok=True)
    write_error_log(out_dir / ERROR_LOG, errors)
    write_status(out_dir / "extract.csv", ordered())
    run_tasks(tasks, executor, description="extract", on_result=on_result)
    result = ordered()
    failed = [r for r in result if r["status"] == "failed"]
    if failed and not skip_errors:
        raise BatchError(
            f"{len(failed)} of {len(result)} slide(s) failed "
            f"({', '.join(r['slide_id'] for r in failed[:10])}); first error: "
            f"{failed[0]['error']}. Details in {out_dir / 'extract.csv'} (tracebacks in "
            f"{out_dir / ERROR_LOG}); pass --skip-errors to continue past failing slides"
        )
    return result


def write_status(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically (re)write the status CSV with one row per slide handled so far."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(STATUS_COLUMNS))
    df["n_patches"] = pd.to_numeric(df["n_patches"], errors="coerce").astype("Int64")
    atomic_write_text(path, df.to_csv(index=False))
