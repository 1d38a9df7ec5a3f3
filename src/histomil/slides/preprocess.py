"""`histomil preprocess`: segment tissue, tile, and write one patch file per slide.

Per slide, into the job directory ``out``: ``patches/<id>.h5`` (written last, so its presence
means the slide is finished and a rerun skips it), ``tissue/<id>.geojson`` and
``thumbnails/<id>.png``. ``preprocess.csv`` gets one row per slide (status ok|empty|error|skipped)
and is rewritten atomically as each slide finishes, so an interrupted run keeps its progress.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from histomil._io import SLIDE_SUFFIXES, atomic_path, atomic_write_json, slide_id_from_path
from histomil.executors import BatchError, ExecutorConfig, Task, TaskResult, run_tasks
from histomil.slides.tissue import SegmentationConfig

STATUS_COLUMNS = ("slide_id", "status", "n_patches", "seconds", "error", "slide_path")


@dataclass(frozen=True)
class PreprocessConfig:
    """Tiling settings: ``patch_size`` px at ``target_mpp`` um/px, keep patches with tissue
    fraction >= ``min_tissue``; ``segmentation`` settings; ``thumbnail_max`` caps the
    segmentation thumbnail's longest side; ``backend`` forces a slide reader."""

    patch_size: int = 224
    target_mpp: float = 0.5
    min_tissue: float = 0.05
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    thumbnail_max: int = 4096
    backend: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"min_tissue must be in [0, 1], got {self.min_tissue}")


@dataclass(frozen=True)
class SlideInput:
    """One slide to preprocess; ``mpp`` overrides the level-0 resolution from the metadata."""

    slide_id: str
    path: Path
    mpp: float | None = None


def collect_slides(
    inputs: Sequence[str | os.PathLike], slide_mpp: float | None = None
) -> list[SlideInput]:
    """Files, directories (slide files directly inside) and manifest CSVs (``slide_path``, optional
    ``slide_id`` and ``mpp``) -> unique slides. ``slide_mpp`` applies where no manifest mpp is."""
    from histomil.manifest import read_manifest

    found: list[SlideInput] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in SLIDE_SUFFIXES)
            found += [SlideInput(slide_id_from_path(f), f, slide_mpp) for f in files]
        elif p.suffix.lower() == ".csv":
            df = read_manifest(p, required=("slide_path",))
            for _, row in df.iterrows():
                if row["slide_path"] is None:
                    raise ValueError(f"manifest {p}: empty slide_path for {row.get('slide_id')}")
                sid = row.get("slide_id")
                sid = slide_id_from_path(row["slide_path"]) if not isinstance(sid, str) else sid
                mpp = row.get("mpp")
                mpp = float(mpp) if mpp is not None and np.isfinite(float(mpp)) else slide_mpp
                found.append(SlideInput(sid, Path(row["slide_path"]), mpp))
        elif p.is_file() or p.suffix:
            found.append(SlideInput(slide_id_from_path(p), p, slide_mpp))
        else:
            raise FileNotFoundError(f"{p}: not a slide file, a folder or a manifest CSV")
    seen: dict[str, Path] = {}
    for s in found:
        if s.slide_id in seen and seen[s.slide_id] != s.path:
            raise ValueError(
                f"two slides share the id {s.slide_id!r}: {seen[s.slide_id]}, {s.path}"
            )
        seen[s.slide_id] = s.path
    unique = {s.slide_id: s for s in found}
    return list(unique.values())


def _thumbnail_size(dims: tuple[int, int], size0: int, cap: int) -> int:
    """Longest thumbnail side: ~16 mask px per patch side, between 1024 and ``cap``."""
    longest = max(dims)
    want = longest * 16 / max(size0, 1)
    return int(min(longest, max(1024, min(cap, want))))


def preprocess_slide(slide: SlideInput, out: str | os.PathLike, config: PreprocessConfig) -> dict:
    """Segment, tile and write the outputs of one slide; return its status row (no 'seconds')."""
    import h5py

    from histomil import __version__
    from histomil.slides.backends import open_slide
    from histomil.slides.tiling import TileSpec, grid_coords, tissue_fractions
    from histomil.slides.tissue import mask_to_polygons, segment_tissue, write_tissue_geojson

    out = Path(out)
    with open_slide(slide.path, mpp=slide.mpp, backend=config.backend) as s:
        spec = TileSpec.for_slide(s, config.patch_size, config.target_mpp)
        thumb = s.get_thumbnail(
            _thumbnail_size(s.dimensions, spec.patch_size_level0, config.thumbnail_max)
        )
        scale = (s.dimensions[0] / thumb.shape[1], s.dimensions[1] / thumb.shape[0])
        mask = segment_tissue(thumb, spec.level0_mpp * scale[0], config.segmentation)
        coords = grid_coords(s.dimensions, spec.patch_size_level0)
        frac = tissue_fractions(mask, coords, spec.patch_size_level0, s.dimensions)
        keep = frac >= config.min_tissue if config.min_tissue > 0 else frac > 0
        coords, frac = coords[keep], frac[keep]
        polygons = mask_to_polygons(mask, scale)
        write_tissue_geojson(out / "tissue" / f"{slide.slide_id}.geojson", polygons)
        _write_overview(
            out / "thumbnails" / f"{slide.slide_id}.png", thumb, polygons, coords, spec, scale
        )
        attrs = {
            "slide_id": slide.slide_id,
            "slide_path": str(Path(slide.path).resolve()),
            "patch_size": spec.patch_size,
            "patch_size_level0": spec.patch_size_level0,
            "target_mpp": spec.target_mpp,
            "level0_mpp": spec.level0_mpp,
            "read_level": spec.read_level,
            "read_size": spec.read_size,
            "target_magnification": spec.target_magnification,
            "segmentation": config.segmentation.method,
            "min_tissue": config.min_tissue,
            "histomil_version": __version__,
            "backend": s.backend,
            "level0_width": s.dimensions[0],
            "level0_height": s.dimensions[1],
        }
    target = out / "patches" / f"{slide.slide_id}.h5"
    with atomic_path(target) as tmp, h5py.File(tmp, "w") as h5:
        ds = h5.create_dataset("coords", data=coords.astype(np.int64))
        ds.attrs["patch_level"] = 0  # CLAM: coords and patch_size are level-0 values
        ds.attrs["patch_size"] = spec.patch_size_level0
        h5.create_dataset("tissue", data=frac.astype(np.float32))
        for k, v in attrs.items():
            h5.attrs[k] = v
    status = "ok" if len(coords) else "empty"
    error = "" if len(coords) else "no tissue found (no patch reaches min_tissue)"
    return {
        "slide_id": slide.slide_id,
        "status": status,
        "n_patches": int(len(coords)),
        "error": error,
    }


def _write_overview(path: Path, thumb, polygons, coords, spec, scale) -> None:
    """Thumbnail (longest side <= 2048) with the patch grid (blue) and tissue contour (green)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(thumb)
    k = min(1.0, 2048 / max(img.size))
    if k < 1:
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))))
    sx, sy = k / scale[0], k / scale[1]
    draw = ImageDraw.Draw(img)
    side = spec.patch_size_level0
    for x, y in coords:
        draw.rectangle([x * sx, y * sy, (x + side) * sx, (y + side) * sy], outline=(40, 90, 230))
    for poly in polygons.geoms:
        for ring in [poly.exterior, *poly.interiors]:
            pts = [(x * sx, y * sy) for x, y in ring.coords]
            draw.line(pts, fill=(0, 170, 0), width=max(1, round(max(img.size) / 600)))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _task(slide: SlideInput, out: str, config: PreprocessConfig) -> dict:
    return preprocess_slide(slide, out, config)


def preprocess_slides(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    config: PreprocessConfig | None = None,
    executor: ExecutorConfig | None = None,
    slide_mpp: float | None = None,
    skip_errors: bool = False,
    overwrite: bool = False,
):
    """Preprocess every slide of ``inputs`` (see :func:`collect_slides`) into ``out``.

    Finished slides (their patch file exists) are skipped. Returns the status table (a pandas
    DataFrame, one row per slide of this run). Failing slides never stop the others; unless
    ``skip_errors``, a :class:`~histomil.executors.BatchError` is raised at the end naming them.
    """
    import pandas as pd

    config = config or PreprocessConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    slides = collect_slides(inputs, slide_mpp)
    csv_path = out / "preprocess.csv"
    previous = pd.read_csv(csv_path, dtype={"slide_id": str}) if csv_path.is_file() else None
    rows: dict[str, dict] = {}
    if previous is not None:
        rows = {r["slide_id"]: r for r in previous.to_dict("records")}
    run_rows: dict[str, dict] = {}
    todo = []
    for s in slides:
        done = out / "patches" / f"{s.slide_id}.h5"
        if done.is_file() and not overwrite:
            run_rows[s.slide_id] = {
                "slide_id": s.slide_id,
                "status": "skipped",
                "n_patches": _count(done, config),
                "seconds": 0.0,
                "error": "",
                "slide_path": str(s.path),
            }
        else:
            todo.append(s)
    rows.update(run_rows)
    by_id = {s.slide_id: s for s in slides}

    total = [sum(max(0, int(r["n_patches"])) for r in run_rows.values())]

    def on_result(result: TaskResult) -> str:
        row = {"slide_id": result.key, "seconds": round(result.seconds, 3)}
        if result.ok:
            row.update(result.value)
        else:
            row.update(status="error", n_patches=0, error=result.error.splitlines()[0])
        row["slide_path"] = str(by_id[result.key].path)
        rows[result.key] = run_rows[result.key] = row
        _write_status(csv_path, rows)
        total[0] += int(row["n_patches"])
        return f"{total[0]:,} patches"

    tasks = [Task(s.slide_id, _task, {"slide": s, "out": str(out), "config": config}) for s in todo]
    _write_status(csv_path, rows)
    atomic_write_json(out / "preprocess_config.json", config_dict(config))
    run_tasks(tasks, executor, description="preprocess", on_result=on_result)
    table = pd.DataFrame([run_rows[s.slide_id] for s in slides], columns=list(STATUS_COLUMNS))
    failed = table[table["status"] == "error"]
    if len(failed) and not skip_errors:
        lines = [f"{r.slide_id}: {r.error}" for r in failed.itertuples()]
        raise BatchError(
            f"{len(failed)} of {len(table)} slide(s) failed (see {csv_path}; rerun with "
            "--skip-errors to accept them):\n" + "\n".join(lines)
        )
    return table


def _count(path: Path, config: PreprocessConfig) -> int:
    """Patches in a finished patch file; refuses one made with other tiling settings."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            n = int(h5["coords"].shape[0])
            made = {k: h5.attrs.get(k) for k in ("patch_size", "target_mpp", "min_tissue")}
            made["segmentation"] = h5.attrs.get("segmentation")
    except (OSError, KeyError) as exc:
        raise ValueError(f"{path}: unreadable patch file ({exc}); delete it and rerun") from exc
    wanted = {
        "patch_size": config.patch_size,
        "target_mpp": config.target_mpp,
        "min_tissue": config.min_tissue,
        "segmentation": config.segmentation.method,
    }
    diff = [k for k, v in wanted.items() if made[k] is None or not _same(made[k], v)]
    if diff:
        detail = ", ".join(f"{k}: file {made[k]} vs now {wanted[k]}" for k in diff)
        raise ValueError(
            f"{path} was made with other settings ({detail}); use another --out folder or "
            "delete the old outputs"
        )
    return n


def _same(a, b) -> bool:
    if isinstance(b, str):
        return str(a) == b
    return bool(np.isclose(float(a), float(b)))


def _write_status(path: Path, rows: dict[str, dict]) -> None:
    import pandas as pd

    df = pd.DataFrame(list(rows.values()), columns=list(STATUS_COLUMNS))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def config_dict(config: PreprocessConfig) -> dict:
    """The resolved settings, for saving next to the outputs."""
    return asdict(config)
