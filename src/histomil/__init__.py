"""histomil: from whole-slide images and partial annotations to MIL slide classifiers.

Pipeline (imports flow one way): slides -> annotations -> features/bags -> models -> objectives
-> training -> evaluation -> viz. See README.md and docs/.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("histomil")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
