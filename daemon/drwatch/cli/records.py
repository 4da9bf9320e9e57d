"""``attest`` (an offline copy verified by hand) and ``ack`` (past failures acknowledged): records in the store."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from drwatch.cli.common import run_configured
from drwatch.core.errors import EXIT_CONFIG, EXIT_OK
from drwatch.core.textsafe import escape


async def _attest(cfg: Any, args: argparse.Namespace) -> int:
    from drwatch.core.model import Attestation
    from drwatch.state.snapshot import Snapshot
    from drwatch.store import open_store

    asset = cfg.assets.get(args.asset)
    if asset is None:
        print(f"drwatch attest: unknown asset {args.asset!r}", file=sys.stderr)
        return EXIT_CONFIG
    copy = next((c for c in asset.copies if c.label == args.copy), None)
    if copy is None:
        print(f"drwatch attest: asset {args.asset!r} has no copy {args.copy!r} "
              f"(copies: {[c.label for c in asset.copies]})", file=sys.stderr)
        return EXIT_CONFIG
    if not cfg.locations[copy.location].offline:
        print(f"drwatch attest: warning: location {copy.location!r} is not declared offline; the "
              "attestation is recorded but only offline copies use it", file=sys.stderr)
    given: float | None = None
    if args.recovery_point and args.recovery_point != "none":
        when = datetime.fromisoformat(args.recovery_point)
        given = (when.replace(tzinfo=UTC) if when.tzinfo is None else when).timestamp()
        if given > time.time() + 300:
            print(f"drwatch attest: --recovery-point {args.recovery_point} lies in the future: a copy cannot "
                  "hold a recovery point that has not happened", file=sys.stderr)
            return EXIT_CONFIG
    store = open_store(cfg)
    await store.open()
    try:
        if args.recovery_point == "none":
            rp = None
        elif given is not None:
            rp = given
        else:
            rp = Snapshot.from_state(cfg, await store.load_state()).recovery_point(args.asset)
        await store.add_attestation(Attestation(args.asset, args.copy, args.note, time.time(), rp))
    finally:
        await store.close()
    from drwatch.state.report import iso_time

    rp_text = (iso_time(rp) or "unspecified") if rp else "unspecified"
    print(f"attested {args.asset}/{args.copy} (recovery point {rp_text})", file=sys.stderr)
    return EXIT_OK


def cmd_attest(args: argparse.Namespace) -> int:
    try:
        return run_configured(args, "drwatch attest", lambda cfg: _attest(cfg, args))
    except ValueError as exc:
        print(f"drwatch attest: {exc}", file=sys.stderr)
        return EXIT_CONFIG


async def _ack(cfg: Any, args: argparse.Namespace) -> int:
    from drwatch.core.model import Ack
    from drwatch.store import open_store

    asset = cfg.assets.get(args.asset)
    if asset is None:
        print(f"drwatch ack: unknown asset {escape(args.asset)!r}", file=sys.stderr)
        return EXIT_CONFIG
    labels = [v.label for v in asset.validators]
    if not labels:
        print(f"drwatch ack: asset {args.asset!r} has no validators: there is nothing to acknowledge",
              file=sys.stderr)
        return EXIT_CONFIG
    if args.validator is not None and args.validator not in labels:
        print(f"drwatch ack: asset {args.asset!r} has no validator {escape(args.validator)!r} (validators: "
              f"{', '.join(labels) or 'none'})", file=sys.stderr)
        return EXIT_CONFIG
    by, reason = args.by.strip(), args.reason.strip()
    if not by or not reason:
        print("drwatch ack: --by and --reason must say who acknowledges and why", file=sys.stderr)
        return EXIT_CONFIG
    now = time.time()
    store = open_store(cfg)
    await store.open()
    try:
        for label in [args.validator] if args.validator is not None else labels:
            await store.add_ack(Ack(args.asset, label, by, reason, now))
    finally:
        await store.close()
    which = args.validator or ", ".join(labels)
    print(f"acknowledged the failures of {args.asset} ({which}) up to now: restore_errors no longer counts them; "
          "a failing latest run and any later failure still count", file=sys.stderr)
    return EXIT_OK


def cmd_ack(args: argparse.Namespace) -> int:
    return run_configured(args, "drwatch ack", lambda cfg: _ack(cfg, args))
