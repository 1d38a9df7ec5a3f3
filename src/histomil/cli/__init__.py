"""Command-line interface: parses arguments and calls one library function per subcommand.

Each command module attaches its commands to the shared app when imported below; heavy
libraries (torch, openslide, ray) are imported inside the commands, never at import time.
"""

from __future__ import annotations

from histomil.cli import (
    cluster,  # noqa: F401  (registers commands)
    demo,  # noqa: F401  (registers commands)
    experiment,  # noqa: F401  (registers commands)
    extract,  # noqa: F401  (registers commands)
    labelling,  # noqa: F401  (registers commands)
    mhim,  # noqa: F401  (registers commands)
    slides,  # noqa: F401  (registers commands)
    synth_bags,  # noqa: F401  (registers commands)
    train,  # noqa: F401  (registers commands)
    viz,  # noqa: F401  (registers commands)
)
from histomil.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
