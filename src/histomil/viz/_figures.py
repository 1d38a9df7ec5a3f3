"""Report figures (ROC/PR curves, training curves) and the captions stored inside PNG files.

A PNG written by histomil carries a ``Description`` text chunk that says what it shows; the
report uses it as the caption, so a figure never goes out captioned with its file name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from histomil._io import read_csv
from histomil.viz import _html as H
from histomil.viz._metrics import task_of

CAPTION_KEY = "Description"
#: training terms shown apart from the bag loss, with their names in the figure
AUX_TERMS = {
    "rank": "rank loss",
    "con": "consistency loss",
    "attn": "attention loss",
    "aux": "model auxiliary loss",
}


def png_caption(path: Path) -> str | None:
    """The ``Description`` text stored in a PNG (None without one or when unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            text = img.info.get(CAPTION_KEY) or img.text.get(CAPTION_KEY)
    except (OSError, AttributeError):
        return None
    return str(text) if text else None


def set_png_caption(path: Path, caption: str) -> Path:
    """Rewrite ``path`` with ``caption`` as its ``Description`` (pixels unchanged)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from histomil._io import atomic_path

    with Image.open(path) as img:
        img.load()
        info = PngInfo()
        for key, value in getattr(img, "text", {}).items():
            if key != CAPTION_KEY:
                info.add_text(key, str(value))
        info.add_text(CAPTION_KEY, caption)
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG", pnginfo=info)
    return path


_FALLBACKS = (
    (re.compile(r"^heatmap_(.+)_montage$"), "Top and bottom attention patches of slide {0}"),
    (re.compile(r"^heatmap_(.+)$"), "Attention heatmap {0}"),
    (re.compile(r"^tiling_(synthetic|real)_(.+)$"), "Tissue contour and patch grid, {0} slide {1}"),
)


def figure_caption(path: Path) -> str:
    """What a PNG shows: its stored description, else a sentence from the histomil file-name
    patterns, else the name without underscores (never a bare file name with extension)."""
    stored = png_caption(path)
    if stored:
        return stored
    for pattern, text in _FALLBACKS:
        m = pattern.match(path.stem)
        if m:
            return text.format(*m.groups())
    return path.stem.replace("_", " ")


def curves_png(df: pd.DataFrame) -> bytes | None:
    """ROC and PR curves of the test rows: one thin line per fold and the pooled curve."""
    test = df[df["split"] == "test"]
    if task_of(df) != "binary" or test["label"].nunique() < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    fig = Figure(figsize=(10, 4.3))
    ax_roc, ax_pr = fig.subplots(1, 2)
    groups = [(f"fold {k} test", g, 0.8, 0.45) for k, g in test.groupby("fold")]
    groups.append(("all folds pooled", test, 2.2, 1.0))
    for name, g, lw, alpha in groups:
        y, p = g["label"].to_numpy(int), g["prob"].to_numpy(float)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        prec, rec, _ = precision_recall_curve(y, p)
        kw = {"lw": lw, "alpha": alpha, "color": "#1f2f4d" if name.endswith("pooled") else None}
        ax_roc.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y, p):.3f})", **kw)
        ax_pr.step(
            rec, prec, where="post", label=f"{name} (AP {average_precision_score(y, p):.3f})", **kw
        )
    ax_roc.plot([0, 1], [0, 1], ls="--", color="#999", lw=0.8)
    ax_pr.axhline(float(test["label"].mean()), ls="--", color="#999", lw=0.8)
    for ax, (xl, yl, title) in zip(
        (ax_roc, ax_pr),
        (
            ("false positive rate", "true positive rate", "ROC"),
            ("recall", "precision", "Precision-recall"),
        ),
        strict=True,
    ):
        ax.set(xlabel=xl, ylabel=yl, title=title, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="lower right" if ax is ax_roc else "lower left")
    fig.tight_layout()
    return H.fig_png(fig)


def _bag_column(hist: pd.DataFrame) -> str | None:
    """The training column comparable with ``val_loss`` (the slide loss of the bag)."""
    return next((c for c in ("train_bag", "train_loss", "train_total") if c in hist), None)


def history_figure(files: list[Path]):
    """Training curves with one panel per quantity on its own axis: the bag loss (training, and
    validation, which is the same slide loss on the validation bags), each auxiliary training
    term (rank, consistency, ...) and validation AUROC; the best epoch (lowest validation loss)
    of each fold is marked. Returns the matplotlib figure, or None without history."""
    hists = [(p.parent.name, read_csv(p)) for p in files[:20]]
    hists = [(k, h) for k, h in hists if len(h)]
    if not hists:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    aux = [t for t in AUX_TERMS if any(f"train_{t}" in h for _, h in hists)]
    has_auroc = any("val_auroc" in h and h["val_auroc"].notna().any() for _, h in hists)
    n = 1 + len(aux) + int(has_auroc)
    fig = Figure(figsize=(min(4.2 * n, 16), 3.6))
    axes = fig.subplots(1, n, squeeze=False)[0]
    colours = matplotlib.colormaps["tab10"]
    for i, (fold, hist) in enumerate(hists):
        c = colours(i % 10)
        x = hist["epoch"] if "epoch" in hist else np.arange(len(hist))
        bag = _bag_column(hist)
        if bag is not None:
            axes[0].plot(x, hist[bag], lw=1.2, color=c, label=f"fold {fold} train")
        if "val_loss" in hist and hist["val_loss"].notna().any():
            val = hist["val_loss"]
            axes[0].plot(x, val, lw=1.2, ls="--", color=c, label=f"fold {fold} validation")
            best = int(val.idxmin())
            axes[0].plot(x[best], val[best], "*", ms=9, color=c)
        for ax, term in zip(axes[1 : 1 + len(aux)], aux, strict=True):
            if f"train_{term}" in hist:
                ax.plot(x, hist[f"train_{term}"], lw=1.2, color=c, label=f"fold {fold} train")
        if has_auroc and "val_auroc" in hist:
            axes[-1].plot(x, hist["val_auroc"], lw=1.2, ls="--", color=c, label=f"fold {fold}")
    axes[0].set(title="Bag (slide) loss: train vs validation", ylabel="loss")
    for ax, term in zip(axes[1 : 1 + len(aux)], aux, strict=True):
        ax.set(title=f"{AUX_TERMS[term].capitalize()} (training)", ylabel=AUX_TERMS[term])
    if has_auroc:
        axes[-1].set(title="Validation AUROC", ylabel="AUROC")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, ncol=1 if len(hists) <= 5 else 2)
    fig.tight_layout()
    return fig


HISTORY_CAPTION = (
    "Training curves per fold, one quantity per panel: the bag (slide) loss on training bags "
    "(solid) and validation bags (dashed; the star marks the best epoch, lowest validation loss, "
    "whose weights were kept), each auxiliary training term on its own axis, and validation AUROC."
)
