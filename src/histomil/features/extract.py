"""Patch files -> bag files: read patches in DataLoader workers, encode in batches, write atomically.

``extract_dir`` runs one task per slide through :func:`histomil.executors.run_tasks`, skips slides
whose bag already exists, isolates failures and keeps ``OUT/extract.csv`` up to date.
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
from histomil.executors import BatchError, ExecutorConfig, Task, TaskResult, run_tasks
from histomil.features.encoders import Encoder, WeightsSpec, create_encoder, describe
from histomil.features.patches import PatchDataset, make_loader, read_patch_file

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
STATUS_COLUMNS = ("slide_id", "status", "n_patches", "seconds", "patches_per_s", "bag", "error")


@dataclass(frozen=True)
class ExtractConfig:
    """How to extract: encoder and weights, batching, reader workers, device and precision.

    ``storage_dtype`` float32|float16 is how features are stored in the bag file;
    ``export_pt`` also writes CLAM-style ``pt_files/<id>.pt``; ``slides_dir`` relocates slides
    whose recorded path is gone.
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

    def __post_init__(self) -> None:
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
    fp16 on older GPUs and fp32 on CPUs without bf16; an explicit bf16 that the device cannot
    run is an error."""
    import torch

    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
    else:
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision == "auto":
        return "bf16" if bf16 else ("fp16" if device.type == "cuda" else "fp32")
    if precision == "bf16" and not bf16:
        raise RuntimeError(f"bf16 is not supported on this {device.type}; use --precision float32")
    if precision == "fp16" and device.type != "cuda":
        raise RuntimeError(
            "fp16 autocast is only offered on CUDA; use --precision bfloat16 or float32 on CPU"
        )
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
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(
                x, size=(size, size), mode=self.encoder.interpolation, antialias=True
            ).clamp_(0, 255)
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


def bag_path_for(out_dir: str | os.PathLike, slide_id: str) -> Path:
    return Path(out_dir) / "bags" / f"{slide_id}.h5"


def extract_slide(
    patch_file: str | os.PathLike, out_dir: str | os.PathLike, config: ExtractConfig
) -> dict[str, Any]:
    """Encode one slide's patches into ``OUT/bags/<slide_id>.h5`` (skipped when it exists).

    Returns a status row (see ``STATUS_COLUMNS``). The bag is written only when every patch
    was encoded, atomically, so an interrupted run leaves no partial file.
    """
    import torch

    from histomil.bags.io import load_bag, write_bag

    start = time.perf_counter()
    pf = read_patch_file(patch_file, config.slides_dir)
    bag_path = bag_path_for(out_dir, pf.slide_id)
    row = {"slide_id": pf.slide_id, "bag": str(bag_path), "n_patches": len(pf.coords)}
    if bag_path.exists() and not config.overwrite:
        if config.export_pt:
            _export_pt(out_dir, pf.slide_id, load_bag(bag_path).features)
        return {**row, "status": "skipped", "seconds": 0.0, "patches_per_s": 0.0}
    if len(pf.coords) == 0:
        raise ValueError(f"patch file {pf.path}: 0 patches (no tissue found); nothing to encode")
    runner = get_runner(config)
    dataset = PatchDataset(pf.slide_path, pf.coords, pf.tile_spec(), pf.attrs.get("level0_mpp"))
    workers = min(config.workers, max(0, len(pf.coords) // config.batch_size))
    loader = make_loader(dataset, config.batch_size, workers, runner.device.type == "cuda")
    with _progress(pf.slide_id, len(pf.coords), config.progress) as advance:
        features = encode_batches(runner, loader, len(pf.coords), advance)
    attrs = {k: v for k, v in pf.attrs.items() if k != "histomil_version"}
    attrs.update(describe(runner.encoder))
    attrs.update(
        precision=runner.precision,
        patch_file=str(pf.path),
        torch_version=torch.__version__,
    )
    write_bag(
        bag_path,
        features,
        pf.coords,
        attrs=attrs,
        dtype=config.storage_dtype,
        **{k: v for k, v in pf.extras.items()},
    )
    if config.export_pt:
        _export_pt(out_dir, pf.slide_id, features)
    seconds = time.perf_counter() - start
    rate = len(pf.coords) / seconds if seconds > 0 else 0.0
    return {**row, "status": "done", "seconds": round(seconds, 3), "patches_per_s": round(rate, 2)}


def _export_pt(out_dir, slide_id: str, features: np.ndarray) -> None:
    """CLAM-style ``pt_files/<id>.pt``: a bare float32 (N, D) tensor."""
    import torch

    target = Path(out_dir) / "pt_files" / f"{slide_id}.pt"
    if target.exists():
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

    Slides run one after another locally (the DataLoader workers give the parallelism) or one
    Ray task per slide. A failing slide never stops the others; unless ``skip_errors``, a
    :class:`~histomil.executors.BatchError` listing the failures is raised at the end.
    """
    patches_dir, out_dir = Path(patches_dir), Path(out_dir)
    files = sorted(p for p in patches_dir.glob("*.h5") if not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(
            f"no patch files (*.h5) in {patches_dir}; run `histomil preprocess` first"
        )
    executor = executor or ExecutorConfig()
    if executor.executor == "ray" and _wants_gpu(config.device):
        executor = replace(executor, num_gpus_per_task=1.0)  # one encoder per GPU
    tasks = [
        Task(
            key=p.stem,
            fn=extract_slide,
            kwargs={"patch_file": p, "out_dir": out_dir, "config": config},
        )
        for p in files
    ]
    rows: list[dict[str, Any]] = []

    def on_result(result: TaskResult) -> None:
        if result.ok:
            rows.append(result.value)
        else:
            rows.append({"slide_id": result.key, "status": "failed", "error": result.error})
        write_status(out_dir / "extract.csv", rows)

    run_tasks(tasks, executor, description="extract", on_result=on_result)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed and not skip_errors:
        first = failed[0]["error"].splitlines()[0]
        raise BatchError(
            f"{len(failed)} of {len(rows)} slide(s) failed ({', '.join(r['slide_id'] for r in failed[:10])});"
            f" first error: {first}. Details in {out_dir / 'extract.csv'}; pass --skip-errors to "
            "continue past failing slides"
        )
    return rows


def write_status(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically (re)write the status CSV with one row per slide handled so far."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(STATUS_COLUMNS))
    atomic_write_text(path, df.to_csv(index=False))
