"""histomil.viz: attention heatmaps and montages, QuPath GeoJSON export, the HTML report.

Public API (imported on first use, so ``import histomil.viz`` stays cheap)::

    render_heatmap(source, out_png=None, options=HeatmapOptions(), slide_id=..., fold=...) -> Path
    export_qupath(source, out, options=QuPathOptions(), slide_id=..., fold=...) -> Path
    build_report(run_or_experiment_dir, out_html=None, options=ReportOptions()) -> Path
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AttentionData": "histomil.viz.attention",
    "VizError": "histomil.viz.attention",
    "load_attention": "histomil.viz.attention",
    "HeatmapOptions": "histomil.viz.heatmap",
    "render_heatmap": "histomil.viz.heatmap",
    "montage_path_for": "histomil.viz.heatmap",
    "render_montage": "histomil.viz.montage",
    "QuPathOptions": "histomil.viz.qupath",
    "export_qupath": "histomil.viz.qupath",
    "ReportOptions": "histomil.viz.report",
    "build_report": "histomil.viz.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'histomil.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
