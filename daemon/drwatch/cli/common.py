"""What every command shares: where the configuration is, loading it, and the errors every command reports
the same way (an invalid configuration: 78; a service such as the store unavailable: 69)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from drwatch.core.errors import EXIT_CONFIG, EXIT_UNAVAILABLE, ConfigError, ValidatorError
from drwatch.core.textsafe import escape

NO_CONFIG = "drwatch: pass --config FILE (or set DRWATCH_CONFIG)"


def config_path(args: argparse.Namespace) -> str | None:
    return args.config or os.environ.get("DRWATCH_CONFIG") or None


def print_config_error(exc: ConfigError) -> int:
    print(f"drwatch: invalid configuration {escape(exc.source)}:", file=sys.stderr)
    for problem in exc.shown:  # capped: a generated file with 200k bad keys prints 51 lines
        print(f"  {escape(problem)}", file=sys.stderr)
    if exc.more:
        print(f"  {exc.more_text}", file=sys.stderr)
    return EXIT_CONFIG


def load(path: str, require_assets: bool = True) -> Any:
    from drwatch.config.model import load_config

    return load_config(path, require_assets)


def run_configured(args: argparse.Namespace, prefix: str, body: Callable[[Any], Coroutine[Any, Any, int]],
                   log_level: str | None = None) -> int:
    """A command that needs ``--config``: load it (logging at ``log_level`` if given) and run ``body(cfg)``.
    A missing or invalid configuration exits 78; a ValidatorError (the store, or another service the command
    needs, is unavailable: not a verdict) is printed after ``prefix`` and exits 69."""
    path = config_path(args)
    if path is None:
        print(NO_CONFIG, file=sys.stderr)
        return EXIT_CONFIG
    try:
        cfg = load(path)
        if log_level is not None:
            from drwatch.core import logs

            logs.configure(log_level, cfg.logging.format)
        return asyncio.run(body(cfg))
    except ConfigError as exc:
        return print_config_error(exc)
    except ValidatorError as exc:
        print(f"{prefix}: {escape(exc.message)}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def missing_store(cfg: Any, prog: str) -> int | None:
    """Exit 69 (after saying why) when the configuration's SQLite store does not exist: opening one creates
    it, and a command that only reads the store (status, report, verify-report) would then answer from an
    empty store made at a wrong path. None when it exists, or the store is PostgreSQL."""
    if cfg.store.postgres is not None:
        return None
    path = cfg.sqlite_path()
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        hint = ("" if cfg.store.sqlite is not None or os.environ.get("STATE_DIRECTORY") else
                " (the service keeps it in its state directory: run with STATE_DIRECTORY=/var/lib/drwatch, "
                "or set store.sqlite)")
        print(f"{prog}: no store at {escape(str(path))}: drwatch has not run with this configuration{hint}",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    except OSError as exc:
        print(f"{prog}: cannot read the store {escape(str(path))}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return None
