"""histomil: from whole-slide images and partial annotations to MIL slide classifiers.

Pipeline (imports flow one way): slides -> annotations -> features/bags -> models -> objectives
-> training -> evaluation -> viz. See README.md and docs/.

The steps are importable from here (``from histomil import preprocess, label, extract, train,
heatmap``; docs/api.md). They load on first use, so ``import histomil`` stays light.
"""

from typing import Any

_API = (
    "preprocess",
    "label",
    "extract",
    "train",
    "heatmap",
    "PreprocessResult",
    "LabelResult",
    "ExtractResult",
    "TrainResult",
    "HeatmapResult",
)

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """The version, API functions and result types, computed/imported on first access (PEP 562;
    ``importlib.metadata`` alone costs tens of milliseconds)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("histomil")
        except PackageNotFoundError:  # running from a source tree without installation
            value = "0.0.0+local"
        globals()["__version__"] = value
        return value
    if name in _API:
        from histomil import api

        return getattr(api, name)
    raise AttributeError(f"module 'histomil' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "__version__", *_API})
