"""Per named encoder on this CPU: forward-pass img/s vs the extraction pipeline, parameter counts.

Both numbers come from the same process and the same model (full size, random N(0, 0.02)
weights: speed does not depend on the values): ``forward`` runs the model on normalised tensors
already at its input size; ``pipeline`` reads the patches from the real slide through the
DataLoader, resizes/crops/normalises (``Runner.prepare``) and runs the model
(``encode_batches``), i.e. ``histomil extract`` without the HDF5 write. Patch counts are small
for the big ViTs. Usage::

    PYTHONPATH=src python benchmarks/bench_encoders.py [--encoders uni virchow2] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLIDE = ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
# patches per encoder: enough for a stable rate on small models, a handful for ViT-H/g
COUNTS = {"resnet50_trunc": 16, "lunit_vits8": 8, "uni": 2, "phikon_v2": 2, "conch_v15": 1}
BIG = 1  # ViT-H and ViT-g: one patch (minutes per image on a loaded 2-core CPU)


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), ""
    )
    keep = [
        f
        for f in flags
        if f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")
    ]
    return f"{model}; {' '.join(keep)}"


def build(name: str):
    """Full-size encoder with random weights, without timm's slow init of ~1B parameters."""
    import torch

    from histomil.features import WeightsSpec, create_encoder
    from histomil.features.encoders_foundation import foundation_encoder
    from histomil.features.foundation import SPECS, build_model

    if name not in SPECS:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return create_encoder(name, WeightsSpec(random=True))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = foundation_encoder(SPECS[name], WeightsSpec(random=True), depth=1)  # metadata
    torch.manual_seed(0)
    model = build_model(SPECS[name], init=False)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    enc.model = model.eval()
    enc.architecture = SPECS[name].architecture
    return enc


def bench(name: str, n: int, patch_dir: Path) -> dict:
    import torch

    from histomil.features.extract import Runner, encode_batches
    from histomil.features.patches import PatchDataset, make_loader, read_patch_file

    t0 = time.perf_counter()
    enc = build(name)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in enc.model.parameters())
    runner = Runner(enc, torch.device("cpu"), "fp32")
    size = enc.input_size or 224
    x = torch.randn(n, 3, size, size).contiguous(memory_format=torch.channels_last)
    if n > 1:
        runner.forward(
            x[:1]
        )  # warm-up (skipped for the one-patch giants: it would double the cost)
    t0 = time.perf_counter()
    runner.forward(x)
    fwd = time.perf_counter() - t0
    pf = read_patch_file(patch_dir / "CMU-1-Small-Region.h5")
    ds = PatchDataset(pf.slide_path, pf.coords[:n], pf.tile_spec(), pf.attrs.get("level0_mpp"))
    loader = make_loader(ds, n, 0, False)
    t0 = time.perf_counter()
    feats = encode_batches(runner, loader, n)
    pipe = time.perf_counter() - t0
    return {
        "encoder": name,
        "params": params,
        "feature_dim": int(feats.shape[1]),
        "input": f"{enc.resize or size}->{size}"
        if enc.resize and enc.resize != size
        else str(size),
        "patches": n,
        "build_s": round(build_s, 1),
        "forward_img_s": float(f"{n / fwd:.3g}"),
        "pipeline_img_s": float(f"{n / pipe:.3g}"),
        "forward_s_per_img": float(f"{fwd / n:.3g}"),
        "pipeline_s_per_img": float(f"{pipe / n:.3g}"),
        "pipeline_over_forward": round(fwd / pipe, 2),
        "load_average": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--encoders", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.features.conftest import write_patch_file

    from histomil.features.foundation import SPECS

    torch.set_num_threads(args.threads)
    names = args.encoders or ["resnet50_trunc", *sorted(SPECS)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_encoders_"))
    path = write_patch_file(tmp, SLIDE, n=max(COUNTS.values()), patch_size=224)
    import h5py
    import numpy as np

    with h5py.File(path, "a") as f:  # a grid inside the slide (2220 x 2967 px)
        xy = [(x, y) for y in range(0, 2967 - 224, 224) for x in range(0, 2220 - 224, 224)]
        del f["coords"]
        f["coords"] = np.asarray(xy[: max(COUNTS.values())], dtype=np.int64)
    rows = []
    for name in names:
        row = bench(name, COUNTS.get(name, BIG), tmp)
        print(json.dumps(row), flush=True)
        rows.append(row)
    meta = {
        "cpu": cpu_flags(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_after": os.getloadavg(),
    }
    print(json.dumps(meta))
    print(
        "| encoder | params | dim | input | patches | forward img/s | pipeline img/s | "
        "pipeline/forward | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['encoder']}` | {r['params'] / 1e6:.1f} M | {r['feature_dim']} | {r['input']} | "
            f"{r['patches']} | {r['forward_img_s']} | {r['pipeline_img_s']} | "
            f"{r['pipeline_over_forward']} | {r['load_average']} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
