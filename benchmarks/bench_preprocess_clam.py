"""`histomil preprocess` vs CLAM's `create_patches_fp.py` vs a minimal OpenSlide + Otsu + grid script.

One CAMELYON-size synthetic slide (40,000 x 30,000 px at 0.25 um/px, JPEG tiles; the slide of
`histomil synth slides --n 1 --seed 4 --size 40000x30000 --level0-mpp 0.25`), 224-px patches at 20x
(448 level-0 px, no overlap). Every tool runs as a fresh subprocess, interleaved (the order
rotates each repeat), median of ``--repeats``; wall time and peak memory (``wait4`` rusage of the
child and its reaped children), patches found, per-slide work where the tool reports it:

- ``histomil``: the whole command (`histomil preprocess SLIDE --out DIR`); per-slide work is the
  ``seconds`` column of ``preprocess.csv`` (open, segment, tile, write);
- ``histomil (library)``: `python -c "preprocess_slides(...)"`, i.e. the command without the CLI's
  start-up, what the command costs once `import histomil.cli` no longer loads torch;
- ``CLAM``: `create_patches_fp.py --seg --patch --stitch --patch_size 448 --step_size 448` when a
  CLAM checkout is given (``--clam DIR``; it needs opencv-python, e.g. on ``--clam-pythonpath``);
  per-slide work = its printed segmentation + patching (+ stitching) seconds;
- ``minimal``: a ~25-line OpenSlide + saturation Otsu + grid script written by this benchmark (the
  floor for the same job).

Also the import time of `histomil.slides.preprocess` and `histomil.cli` (`python -c "import X"`,
minus `python -c pass`), and a cohort mode (``--cohort N``): N links to the slide, whole command
with ``--workers 2`` and ``--workers 1`` vs CLAM (sequential), slides per minute.

    python benchmarks/bench_preprocess_clam.py [--workdir DIR] [--clam /tmp/clam]
        [--clam-pythonpath DIR] [--repeats 3] [--cohort 20]

Never downloads anything: CLAM is used only when a checkout is given (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PATCH0 = 448  # 224 px at 0.5 um/px from a 0.25 um/px slide

CLI = "import sys; from histomil.cli import main; sys.exit(main())"  # = `histomil ...`
LIBRARY = """
import sys
from histomil.slides.preprocess import PreprocessConfig, preprocess_slides
preprocess_slides([sys.argv[1]], sys.argv[2], PreprocessConfig())
"""
MINIMAL = """
import sys, h5py, numpy as np, openslide
slide = openslide.OpenSlide(sys.argv[1])
level = slide.get_best_level_for_downsample(64)
ds = slide.level_downsamples[level]
rgb = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]))[..., :3]
mx, mn = rgb.max(2).astype(np.float32), rgb.min(2).astype(np.float32)
sat = np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)
hist, edges = np.histogram(sat, 256, (0, 1))
p = hist / hist.sum(); c = (edges[:-1] + edges[1:]) / 2; w = np.cumsum(p); m = np.cumsum(p * c)
score = np.divide((m[-1] * w - m) ** 2, w * (1 - w), out=np.zeros_like(w), where=(w > 0) & (w < 1))
mask = sat > c[np.argmax(score)]
W, H = slide.dimensions
xs, ys = np.arange(0, W - 448 + 1, 448), np.arange(0, H - 448 + 1, 448)
coords = np.array([(x, y) for y in ys for x in xs])
k = 448 / ds
frac = np.array([mask[int(y / ds):int(y / ds + k) + 1, int(x / ds):int(x / ds + k) + 1].mean()
                 for x, y in coords])
with h5py.File(sys.argv[2], "w") as h5:
    h5["coords"] = coords[frac >= 0.05]
"""


STAGES = """
import json, statistics, sys, tempfile, time
from pathlib import Path
from histomil.slides.backends import open_slide
from histomil.slides.preprocess import (
    PreprocessConfig, SlideInput, _write_overview, preprocess_slide, segmentation_downsample,
)
from histomil.slides.tiling import TileSpec, grid_coords, tissue_fractions
from histomil.slides.tissue import mask_to_polygons, segment_tissue, write_tissue_geojson

path, repeats = sys.argv[1], int(sys.argv[2])
config, out = PreprocessConfig(), Path(tempfile.mkdtemp())
times = {}
def lap(name, t0):
    times.setdefault(name, []).append(time.perf_counter() - t0)
    return time.perf_counter()
for r in range(repeats + 1):  # the first round pays the first-call imports: not counted
    t0 = t = time.perf_counter()
    with open_slide(path) as s:
        spec = TileSpec.for_slide(s, config.patch_size, config.target_mpp)
        ds = segmentation_downsample(s.dimensions, spec.patch_size_level0, config.thumbnail_max)
        thumb = s.read_downsampled(ds)
        t = lap("open + read level", t)
        scale = (s.dimensions[0] / thumb.shape[1], s.dimensions[1] / thumb.shape[0])
        mask = segment_tissue(thumb, spec.level0_mpp * scale[0], config.segmentation)
        t = lap("segment", t)
        coords = grid_coords(s.dimensions, spec.patch_size_level0)
        frac = tissue_fractions(mask, coords, spec.patch_size_level0, s.dimensions)
        coords, frac = coords[frac >= config.min_tissue], frac[frac >= config.min_tissue]
        t = lap("grid + tissue fractions", t)
        polygons = mask_to_polygons(mask, scale)
        write_tissue_geojson(out / "t.geojson", polygons)
        t = lap("polygons + GeoJSON", t)
        _write_overview(out / "o.png", thumb, polygons, coords, spec, scale)
        t = lap("overview PNG", t)
    t = time.perf_counter()
    preprocess_slide(SlideInput(Path(path).stem, path), out / str(r), config)
    lap("preprocess_slide (whole)", t)
    if r == 0:
        times.clear()
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
"""


def _run(cmd: list[str], env: dict, cwd: Path | None = None) -> dict:
    """Wall and CPU seconds, peak RSS (MB) of the child and its reaped children, stdout."""
    # Bytecode caching on, as on a user's machine: with PYTHONDONTWRITEBYTECODE=1 (set in some
    # shells and CI images) every source-tree module is recompiled in every run (+30-40 ms).
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime  # CPU seconds: steadier than wall on a shared machine
    return {"wall": wall, "cpu": cpu, "rss": usage.ru_maxrss / 1024, "out": out}


def _patches(path: Path) -> int:
    import h5py

    if not path.is_file():  # CLAM writes no patch file for a slide where it found no contour
        return 0
    with h5py.File(path, "r") as h5:
        return int(h5["coords"].shape[0])


def _csv_seconds(out: Path) -> float:
    with open(out / "preprocess.csv") as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f))


def _csv_median(out: Path) -> float:
    """Median per-slide seconds: in a cohort, the slides after each worker's first one do not
    pay the first-call imports (h5py, PIL, OpenSlide, shapely, scikit-image)."""
    with open(out / "preprocess.csv") as f:
        return statistics.median(float(r["seconds"]) for r in csv.DictReader(f))


def _clam_seconds(text: str) -> float:
    found = re.findall(r"(segmentation|patching|stitching) took ([-\d.e]+) seconds", text)
    return sum(max(0.0, float(v)) for _, v in found)


def _clam_median(text: str) -> float:
    """Median per-slide segmentation + patching + stitching seconds of a CLAM run's log."""
    per_slide = [_clam_seconds(part) for part in re.split(r"\nprogress: ", text)]
    return statistics.median(s for s in per_slide if s > 0)


def _clam_stages(text: str) -> dict[str, float]:
    """Median seconds of each stage CLAM prints (segmentation, patching, stitching)."""
    found = re.findall(r"(segmentation|patching|stitching) took ([-\d.e]+) seconds", text)
    return {
        stage: statistics.median(max(0.0, float(v)) for s, v in found if s == stage)
        for stage in ("segmentation", "patching", "stitching")
        if any(s == stage for s, _ in found)
    }


def _stages(args, slide: Path, clam_log: str | None) -> None:
    """Per-slide work stage by stage in one warm process (imports paid), beside CLAM's stages."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = _run([sys.executable, "-c", STAGES, str(slide), str(max(args.repeats, 3))], env)
    ours = json.loads(done["out"].strip().splitlines()[-1])
    whole = ours.pop("preprocess_slide (whole)")
    ours["patch file + status (whole minus the stages)"] = whole - sum(ours.values())
    print("\n### Per-slide work by stage (warm process, median)\n")
    print("| histomil stage | s | | CLAM stage (its printed times, median) | s |")
    print("|---|---|---|---|---|")
    clam = _clam_stages(clam_log) if clam_log else {}
    left, right = list(ours.items()), list(clam.items())
    for i in range(max(len(left), len(right))):
        a = f"{left[i][0]} | {left[i][1]:.3f}" if i < len(left) else " | "
        b = f"{right[i][0]} | {right[i][1]:.3f}" if i < len(right) else " | "
        print(f"| {a} | | {b} |")
    print(
        f"| **preprocess_slide, whole** | **{whole:.3f}** | | **sum** | **{sum(clam.values()):.3f}** |"
    )


def _clam_cmd(args, source: Path, out: Path) -> list[str]:
    """CLAM's seg + patch + stitch over the slides of ``source`` into ``out`` (run in its tree)."""
    return [
        sys.executable, "create_patches_fp.py", "--source", str(source), "--save_dir", str(out),
        "--patch_size", str(PATCH0), "--step_size", str(PATCH0), "--seg", "--patch", "--stitch",
        *(["--preset", args.clam_preset] if args.clam_preset else []),
    ]  # fmt: skip


def _clam_env(args) -> dict:
    return {**os.environ, "PYTHONPATH": args.clam_pythonpath or ""}


def _tools(args, slide_dir: Path, slide: Path, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    py = sys.executable
    (work / "minimal.py").write_text(MINIMAL)
    tools = {
        "histomil": lambda out: (
            [
                py,
                "-c",
                CLI,
                "preprocess",
                str(slide),
                "--out",
                str(out),
                "--segmentation",
                "saturation",
            ],  # fmt: skip
            env,
            None,
        ),
        "histomil (library)": lambda out: ([py, "-c", LIBRARY, str(slide), str(out)], env, None),
        "minimal": lambda out: ([py, str(work / "minimal.py"), str(slide), str(out)], env, None),
    }
    if args.before_src:  # the same command from another source tree (e.g. `git archive REV src`)
        before = {**os.environ, "PYTHONPATH": str(args.before_src)}
        tools["histomil (before)"] = lambda out: (
            [py, "-c", CLI, "preprocess", str(slide), "--out", str(out)],
            before,
            None,
        )
    for spec in args.variant:  # the same command with other packages first on the path
        name, _, path = spec.partition("=")
        variant = {**os.environ, "PYTHONPATH": os.pathsep.join([path, str(SRC)])}
        tools[f"histomil ({name})"] = lambda out, v=variant: (
            [py, "-c", CLI, "preprocess", str(slide), "--out", str(out)],
            v,
            None,
        )
    if args.clam:
        tools["CLAM"] = lambda out: (_clam_cmd(args, slide_dir, out), _clam_env(args), args.clam)
    return tools


def _single(args, slide: Path, work: Path) -> str | None:
    """The one-slide table; returns CLAM's logs (for its stage times) when CLAM ran."""
    slide_dir = work / "one"
    slide_dir.mkdir(exist_ok=True)
    if not (slide_dir / slide.name).exists():
        (slide_dir / slide.name).symlink_to(slide)
    tools = _tools(args, slide_dir, slide, work)
    names = list(tools)
    res: dict[str, list[dict]] = {n: [] for n in names}
    for name in names:  # untimed warm-up: bytecode caches written, slide in the page cache
        out = work / f"out_{name.split()[0]}_{len(name)}"
        shutil.rmtree(out, ignore_errors=True)
        _run(*tools[name](out))
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out = work / f"out_{name.split()[0]}_{len(name)}"  # one folder per tool
            shutil.rmtree(out, ignore_errors=True)
            cmd, env, cwd = tools[name](out)
            row = _run(cmd, env, cwd)
            sid = slide.stem
            if name.startswith("histomil"):
                row["work"] = _csv_seconds(out)
                row["patches"] = _patches(out / "patches" / f"{sid}.h5")
            elif name == "CLAM":
                row["work"] = _clam_seconds(row["out"])
                row["patches"] = _patches(out / "patches" / f"{sid}.h5")
            else:
                row["work"] = float("nan")
                row["patches"] = _patches(out)
            res[name].append(row)
            print(f"  repeat {r}: {name} {row['wall']:.2f} s", file=sys.stderr)
    med = {
        n: {
            k: statistics.median(x[k] for x in rows)
            for k in ("wall", "cpu", "rss", "work", "patches")
        }
        for n, rows in res.items()
    }
    ref = "CLAM" if "CLAM" in med else "minimal"
    print(f"\n### One slide ({args.repeats} interleaved repeats, medians)\n")
    print(
        f"| tool | wall s | vs {ref} | vs minimal | CPU s | CPU vs {ref} | per-slide work s "
        "| peak MB | patches |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, m in med.items():
        print(
            f"| {n} | {m['wall']:.2f} | {m['wall'] / med[ref]['wall']:.2f}x | "
            f"{m['wall'] / med['minimal']['wall']:.2f}x | {m['cpu']:.2f} | "
            f"{m['cpu'] / med[ref]['cpu']:.2f}x | {m['work']:.2f} | {m['rss']:.0f} | "
            f"{m['patches']:.0f} |"
        )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    imports = {}
    for mod in ("pass", "import histomil.slides.preprocess", "import histomil.cli"):
        walls = [_run([sys.executable, "-c", mod], env) for _ in range(args.repeats)]
        imports[mod] = (
            statistics.median(w["wall"] for w in walls),
            statistics.median(w["rss"] for w in walls),
        )
    print("\n| `python -c` | wall s | minus `pass` | peak MB |\n|---|---|---|---|")
    for mod, (wall, rss) in imports.items():
        print(f"| `{mod}` | {wall:.2f} | {wall - imports['pass'][0]:.2f} | {rss:.0f} |")
    return "\n".join(r["out"] for r in res.get("CLAM", [])) or None


def _cohort(args, slide: Path, work: Path) -> None:
    cdir = work / f"cohort{args.cohort}"
    cdir.mkdir(exist_ok=True)
    for i in range(args.cohort):
        link = cdir / f"slide_{i:03d}{slide.suffix}"
        if not link.exists():
            link.symlink_to(slide)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    py = sys.executable
    runs = {
        f"histomil --workers {w}": (
            lambda out, w=w: [
                py,
                "-c",
                CLI,
                "preprocess",
                str(cdir),
                "--out",
                str(out),
                "--segmentation",
                "saturation",
                "--workers",
                str(w),
            ],  # fmt: skip
            env,
            None,
        )
        for w in (2, 1)
    }
    if args.clam:
        runs["CLAM (sequential)"] = (
            lambda out: _clam_cmd(args, cdir, out),
            _clam_env(args),
            args.clam,
        )
    rows = {}
    for name, (make, env_, cwd) in runs.items():
        out = work / f"cohort_out_{len(rows)}"
        shutil.rmtree(out, ignore_errors=True)
        rows[name] = _run(make(out), env_, cwd)
        rows[name]["work"] = (
            _clam_median(rows[name]["out"]) if name.startswith("CLAM") else _csv_median(out)
        )
        print(f"  cohort: {name} {rows[name]['wall']:.1f} s", file=sys.stderr)
    ref = "CLAM (sequential)" if "CLAM (sequential)" in rows else "histomil --workers 1"
    print(f"\n### Cohort: {args.cohort} slides (links to the same file), one run each\n")
    print(
        f"| run | wall s | slides/min | vs {ref} (wall) | CPU s | per-slide work s (median) "
        "| peak MB |\n|---|---|---|---|---|---|---|"
    )
    for name, r in rows.items():
        print(
            f"| {name} | {r['wall']:.1f} | {args.cohort / r['wall'] * 60:.1f} | "
            f"{r['wall'] / rows[ref]['wall']:.2f}x | {r['cpu']:.1f} | {r['work']:.3f} | "
            f"{r['rss']:.0f} |"
        )


def _machine() -> str:
    flags = set()
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return (
        f"CPU {model}, {os.cpu_count()} cores; flags: {' '.join(f for f in wanted if f in flags)}; "
        f"uptime: {uptime}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--slide", type=Path, default=None, help="Default: generate it.")
    parser.add_argument("--clam", type=Path, default=None, help="A CLAM checkout (work tree).")
    parser.add_argument("--clam-pythonpath", default=None, help="Where CLAM finds cv2.")
    parser.add_argument("--clam-preset", default=None, help="A CSV in CLAM's presets/ folder.")
    parser.add_argument("--before-src", type=Path, default=None, help="Also run this src tree.")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PYTHONPATH",
        help="Also run the command with PYTHONPATH first (e.g. another typer); repeatable.",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cohort", type=int, default=0, help="Also run N slides (0: skip).")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="histomil-clam-"))
    work.mkdir(parents=True, exist_ok=True)
    slide = args.slide
    if slide is None:  # through the CLI, whichever module the generator lives in
        slide = work / "synth" / "slides" / "synth_4_000.tif"
        if not slide.is_file():
            cmd = [sys.executable, "-c", CLI, "synth", "slides", "--out", str(work / "synth")]
            cmd += ["--n", "1", "--seed", "4", "--size", "40000x30000", "--level0-mpp", "0.25"]
            subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(SRC)}, check=True)
    slide = slide.resolve()
    print(f"{slide.name}: {slide.stat().st_size / 1e6:.0f} MB; {_machine()}")
    clam_log = _single(args, slide, work)
    _stages(args, slide, clam_log)
    if args.cohort:
        _cohort(args, slide, work)
    print(f"\nafter the run: {_machine()}")


if __name__ == "__main__":
    main()
