"""``run`` (the daemon), ``demo`` and ``golden record``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from drwatch.cli.common import NO_CONFIG, config_path, load, print_config_error
from drwatch.core.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, EXIT_UNCHECKED, ConfigError, ValidatorError
from drwatch.core.textsafe import escape


def cmd_run(args: argparse.Namespace) -> int:
    from drwatch.core import logs
    from drwatch.engine.daemon import Daemon

    path = config_path(args)
    if path is None and (os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET")):
        # Under systemd a missing --config is a deployment mistake, not a wish to run the demo.
        print("drwatch: no --config given (and DRWATCH_CONFIG unset); refusing to run the demo estate as a "
              "service", file=sys.stderr)
        return EXIT_CONFIG
    if path is None:
        from drwatch.cli.demo import default_demo_dir, ensure_demo

        demo_dir = default_demo_dir()
        path = str(ensure_demo(demo_dir))
        print(f"drwatch: no --config given: running the built-in demo estate in {demo_dir}", file=sys.stderr)
    try:
        cfg = load(path)
    except ConfigError as exc:
        return print_config_error(exc)
    logs.configure(cfg.logging.level, cfg.logging.format)

    def listening(port: int, scheme: str) -> None:
        if not sys.stderr.isatty():
            return  # the structured `listening` log line says it; keep stderr pure JSON lines
        host = cfg.http.host
        print(f"drwatch: serving metrics on {scheme}://{host}:{port}/metrics "
              f"(status: {scheme}://{host}:{port}/api/v1/status)", file=sys.stderr, flush=True)

    try:
        return asyncio.run(Daemon(cfg, path, on_listening=listening).run())
    except ConfigError as exc:
        return print_config_error(exc)
    except ValidatorError as exc:
        print(f"drwatch: {escape(exc.message)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except OSError as exc:
        print(f"drwatch: cannot start: {exc.strerror or exc} "
              f"(is {cfg.http.listen} already in use? set http.listen)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from drwatch.cli.demo import create_demo

    cfg_path = create_demo(Path(args.dir), force=args.force, s3_endpoint=args.s3_endpoint,
                           s3_key_env=args.s3_access_key_env, s3_secret_env=args.s3_secret_key_env,
                           s3_region=args.s3_region, s3_provider=args.s3_provider)
    print(f"demo estate written to {args.dir}\nrun it:   drwatch run --config {cfg_path}\n"
          f"check it: drwatch check --config {cfg_path}")
    if args.s3_endpoint:
        print(f"(the S3 part reads its keys from ${args.s3_access_key_env} and ${args.s3_secret_key_env})")
    return EXIT_OK


def cmd_golden(args: argparse.Namespace) -> int:
    """``golden record``: goldens for a model_weights validator's inference, from a known-good copy."""
    from drwatch.core.errors import DrillFailed
    from drwatch.validators.model.inference.record import record_goldens

    path = config_path(args)
    if path is None:
        print(NO_CONFIG, file=sys.stderr)
        return EXIT_CONFIG
    try:
        cfg = load(path)
        out, gold = asyncio.run(record_goldens(cfg, args.asset, args.copy, args.validator))
    except ConfigError as exc:
        return print_config_error(exc)
    except ValueError as exc:
        print(f"drwatch golden: {escape(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except DrillFailed as exc:
        print(f"drwatch golden: {escape(exc.message)}", file=sys.stderr)
        return 1
    except ValidatorError as exc:
        print(f"drwatch golden: {exc.code}: {escape(exc.message)}", file=sys.stderr)
        return EXIT_UNCHECKED
    print(f"recorded {len(gold.inputs)} goldens ({gold.engine}, {gold.recorded_from}, {gold.seal_digest}) -> {out}",
          file=sys.stderr)
    return EXIT_OK

