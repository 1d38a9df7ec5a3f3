"""PNG figures of sweep results (matplotlib with the Agg backend, imported inside functions)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from histomil._io import atomic_path


@dataclass(frozen=True)
class Series:
    """One line: ``mean`` and ``sd`` (error bars) at ``x``; ``stars`` annotate points by x."""

    label: str
    x: Sequence[float]
    mean: Sequence[float]
    sd: Sequence[float] | None = None
    stars: dict[float, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Axes:
    """Labels of one panel."""

    xlabel: str
    ylabel: str
    title: str = ""
    categorical_x: bool = False
    tick_labels: tuple[str, ...] = ()  # names at x = 0, 1, ... (no legend then)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, series: Sequence[Series], axes: Axes) -> None:
    import numpy as np

    xs_all = sorted({float(x) for s in series for x in s.x})
    pos = {x: i for i, x in enumerate(xs_all)} if axes.categorical_x else None
    # several series on a shared x grid: shift each a little sideways so that the error bars
    # (and stars) of different methods do not sit on top of each other
    span = (len(xs_all) - 1 if pos else (xs_all[-1] - xs_all[0])) if len(xs_all) > 1 else 1.0
    step = 0.012 * span if len(series) > 1 and not axes.tick_labels else 0.0
    for i, s in enumerate(series):
        shift = step * (i - (len(series) - 1) / 2)
        x = [(pos[float(v)] if pos else float(v)) + shift for v in s.x]
        sd = None if s.sd is None else np.nan_to_num(np.asarray(s.sd, dtype=float))
        line = ax.errorbar(x, s.mean, yerr=sd, marker="o", capsize=3, label=s.label)
        for xv, m in zip(s.x, s.mean, strict=True):
            star = s.stars.get(float(xv), "")
            if star and star not in ("ns", "n/a") and np.isfinite(m):
                xp = (pos[float(xv)] if pos else float(xv)) + shift
                ax.annotate(
                    star,
                    (xp, m),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    color=line[0].get_color(),
                    fontsize=9,
                )
    if pos:
        ax.set_xticks(range(len(xs_all)), [f"{x:g}" for x in xs_all])
    if axes.tick_labels:
        ax.set_xticks(range(len(axes.tick_labels)), axes.tick_labels, rotation=30, ha="right")
    ax.set_xlabel(axes.xlabel)
    ax.set_ylabel(axes.ylabel)
    if axes.title:
        ax.set_title(axes.title)
    ax.grid(alpha=0.3)
    if not axes.tick_labels:
        if len(series) > 3:  # many lines: keep the legend off the data
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        else:
            ax.legend(fontsize=8)


def figure_caption(panels: Sequence[tuple[Sequence[Series], Axes]], note: str = "") -> str:
    """What a line figure shows, in words (stored in the PNG; the HTML report shows it)."""
    parts = []
    for series, axes in panels:
        what = axes.title or axes.ylabel
        names = ", ".join(s.label for s in series)
        errors = " (error bars: sd over folds)" if any(s.sd is not None for s in series) else ""
        parts.append(f"{what}: {axes.ylabel} by {axes.xlabel} for {names}{errors}.")
    return " ".join(parts) + (f" {note}" if note else "")


def line_figure(
    path: str | os.PathLike,
    panels: Sequence[tuple[Sequence[Series], Axes]],
    note: str = "",
    caption: str | None = None,
) -> None:
    """One PNG with a row of panels, each a set of lines with error bars; written atomically.
    ``caption`` (default: :func:`figure_caption`) is stored as the PNG's ``Description``."""
    plt = _pyplot()
    outside = sum(len(series) > 3 and not axes.tick_labels for series, axes in panels)
    width = 5.2 * len(panels) + 1.8 * outside  # room for legends placed right of their panel
    fig, axs = plt.subplots(1, len(panels), figsize=(width, 4.0), squeeze=False)
    for ax, (series, axes) in zip(axs[0], panels, strict=True):
        _draw(ax, series, axes)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(
            tmp,
            dpi=110,
            format="png",
            metadata={"Description": caption or figure_caption(panels, note)},
        )
    plt.close(fig)
