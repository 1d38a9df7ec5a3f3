"""Command-line interface: parses arguments and calls one API function per subcommand.

Each command module attaches its commands to the shared app when imported below, in pipeline
order (the order of ``histomil --help``); heavy libraries (torch, openslide, ray, matplotlib)
are imported inside the commands, never at import time.
"""

# isort: skip_file
from __future__ import annotations

from histomil.cli import slides  # noqa: F401  (preprocess, synth slides)
from histomil.cli import labelling  # noqa: F401  (label)
from histomil.cli import extract  # noqa: F401
from histomil.cli import train  # noqa: F401
from histomil.cli import viz  # noqa: F401  (heatmap, export-qupath, report)
from histomil.cli import experiment  # noqa: F401
from histomil.cli import synth_bags  # noqa: F401  (synth bags)
from histomil.cli import mhim  # noqa: F401  (bench cost)
from histomil.cli import demo  # noqa: F401  (demo, version)
from histomil.cli import cluster  # noqa: F401  (cluster check)
from histomil.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
