"""drwatch: a disaster-recovery watch daemon that continuously proves recoverability."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drwatch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
