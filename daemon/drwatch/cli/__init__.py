"""The command line (``drwatch ...``) and the local demo estate."""

# First, before any module that imports structlog: drwatch.core.logs imports it without the optional
# console packages it would load for nothing (rich, colorama: start-up, benchmarks/startup_bench.py).
from drwatch.core import logs as _logs  # noqa: F401
