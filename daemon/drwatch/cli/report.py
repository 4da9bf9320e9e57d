"""``drwatch report`` (the evidence of a period, HTML or JSON) and ``drwatch verify-report`` (a report checked
against the store's result chain). docs/reports.md describes both and the JSON."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from drwatch.cli.common import missing_store, run_configured
from drwatch.core.errors import EXIT_CANTCREAT, EXIT_CONFIG, EXIT_NOINPUT, EXIT_NONCOMPLIANT, EXIT_OK
from drwatch.core.textsafe import escape

T = TypeVar("T")


async def _read_store(cfg: Any, read: Callable[[Any], Awaitable[T]]) -> T:
    """``read(store)`` on the configured store, opened for it and closed after. A store that cannot be read
    (a corrupt SQLite file, a PostgreSQL server lost or timing out) is ``store_unavailable`` (exit 69), not a
    traceback."""
    import sqlite3

    from drwatch.core.errors import ValidatorError
    from drwatch.store import open_store

    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, TimeoutError)
    if cfg.store.postgres is not None:
        import asyncpg

        errors += (asyncpg.PostgresError, asyncpg.InterfaceError)
    store = open_store(cfg)
    await store.open()
    try:
        return await read(store)
    except errors as exc:
        # SQLite's and the PostgreSQL server's reasons name no password; a lost connection: its type only.
        reason = str(exc) if isinstance(exc, sqlite3.Error) or hasattr(exc, "sqlstate") else type(exc).__name__
        where = f" {cfg.sqlite_path()}" if cfg.store.postgres is None else ""
        raise ValidatorError("store_unavailable", f"cannot read the store{where}: {reason}") from None
    finally:
        await store.close()


def _signer(cfg: Any) -> Any:
    from drwatch.formats.sealsign import Signer

    key = cfg.reports.signing_key_file
    return None if key is None else Signer.load(cfg.resolve_path(key))


async def _report(cfg: Any, args: argparse.Namespace) -> int:
    from drwatch.core.atomicfile import write_text_atomic
    from drwatch.core.durations import parse_duration
    from drwatch.formats.sealsign import SigningKeyError
    from drwatch.reporting import build, chaincheck, html, integrity

    try:
        span = parse_duration(args.since)
        if span <= 0:
            raise ValueError(f"the period must be longer than 0 s, got {args.since!r} (a share of no time is no "
                             "evidence)")
    except ValueError as exc:
        print(f"drwatch report: --since: {escape(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    unknown = [a for a in args.asset or [] if a not in cfg.assets]
    if unknown:
        print(f"drwatch report: unknown asset {escape(unknown[0])!r}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        signer = _signer(cfg)
    except SigningKeyError as exc:
        print(f"drwatch report: reports.signing_key_file: {exc}", file=sys.stderr)
        return EXIT_NOINPUT
    missing = missing_store(cfg, "drwatch report")
    if missing is not None:
        return missing
    until = time.time()
    since = until - span
    pending = chaincheck.PendingCheck(cfg)  # the whole chain re-hashed beside the report (verify-report's check)
    # The report allocates a few objects per stored result and frees nothing until it is written: the cyclic
    # collector's passes over that growing heap were half the time of a 100k-result report (and find nothing).
    gc.disable()
    try:
        rows = await _read_store(cfg, lambda store: store.history_rows(since, until))
        doc = build.build(cfg, rows, since, until, args.asset or None, every_run=args.format == "json")
        doc["chain"] = await pending.result()
        data = (integrity.seal_json(doc, signer) if args.format == "json"
                else integrity.seal_html(html.render(doc), signer))
    finally:
        pending.cancel()
        gc.enable()
    status = _chain_warning(doc["chain"])
    if args.out == "-":
        sys.stdout.buffer.write(data)
        return status
    def write(fh: Any) -> None:
        fh.write(data.decode())

    try:
        write_text_atomic(Path(args.out), write)
    except OSError as exc:
        print(f"drwatch report: cannot write {escape(args.out)}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANTCREAT
    s = doc["summary"]
    print(f"report of {s['assets']} assets, {s['results']} results ({doc['period']['since']} to "
          f"{doc['period']['until']}, chain head #{doc['evidence']['chain_head']['id']}"
          f"{', signed' if signer is not None else ''}) -> {escape(args.out)}", file=sys.stderr)
    return status


def _chain_warning(chain: dict[str, Any]) -> int:
    """A store whose result chain is broken: warned on stderr (the report itself says so too), exit 1."""
    if chain["intact"]:
        return EXIT_OK
    kinds = ", ".join(f"{k}: {n}" for k, n in chain["problem_kinds"].items())
    print(f"drwatch report: WARNING: the store's result chain is broken ({chain['problems_total']} problems: "
          f"{kinds}): results were edited, deleted or reordered after they were stored. The report is written "
          "and says so; run drwatch verify-report on it for every finding.", file=sys.stderr)
    for p in chain["problems"][:5]:
        print(f"  {p['kind']}: store result id {p['id']}: {escape(p['detail'])}", file=sys.stderr)
    return EXIT_NONCOMPLIANT


def cmd_report(args: argparse.Namespace) -> int:
    return run_configured(args, "drwatch report", lambda cfg: _report(cfg, args), log_level="warning")


async def _verify(cfg: Any, args: argparse.Namespace, data: bytes) -> int:
    from drwatch.formats.sealsign import SealKeyError, SigningKeyError, load_public_key
    from drwatch.reporting import integrity
    from drwatch.reporting.verify import compare

    try:
        if args.public_key:
            key = load_public_key(Path(args.public_key))
        else:
            signer = _signer(cfg)
            key = None if signer is None else signer.public_key()
    except (SealKeyError, SigningKeyError) as exc:
        reason = exc.strerror if isinstance(exc, SealKeyError) and exc.strerror else str(exc)  # no "[Errno 2]"
        print(f"drwatch verify-report: {escape(reason)}", file=sys.stderr)
        return EXIT_NOINPUT
    evidence, problems, signed = integrity.open_report(data, key)
    findings: list[Any] = []
    checked = 0
    if evidence is not None:
        missing = missing_store(cfg, "drwatch verify-report")
        if missing is not None:
            return missing
        chain = await _read_store(cfg, lambda store: store.chain_check())
        findings = compare(evidence, chain)
        checked = len(evidence.get("results") or [])
    for p in problems:
        print(f"TAMPERED report: {p}")
    for f in findings:
        print(f"{'TAMPERED' if f.tampered else 'note'} {f.kind}: {escape(f.detail)}")
    bad = bool(problems) or any(f.tampered for f in findings)
    print(f"{'FAILED' if bad else 'OK'}: {checked} results of the report checked against the store's chain"
          f"{'; signature verified' if signed and not problems else ''}")
    return EXIT_NONCOMPLIANT if bad else EXIT_OK


def cmd_verify_report(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"drwatch verify-report: cannot read {escape(args.file)}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NOINPUT
    return run_configured(args, "drwatch verify-report", lambda cfg: _verify(cfg, args, data), log_level="warning")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("report", help="write the evidence of a period per asset: compliance over time, drills, "
                                      "failures and fixes, attestations (HTML or JSON)")
    p.add_argument("--config", "-c")
    p.add_argument("--since", default="30d", help="how far back (a duration: 30d, 12h; default 30d)")
    p.add_argument("--asset", action="append", help="only this asset (repeatable)")
    p.add_argument("--format", choices=["html", "json"], default="html")
    p.add_argument("--out", "-o", required=True, help="report file ('-' for stdout)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("verify-report", help="check a report against the store: an edited, deleted or reordered "
                                             "result, a rewritten chain, an edited report or a bad signature")
    p.add_argument("file")
    p.add_argument("--config", "-c")
    p.add_argument("--public-key", help="PEM Ed25519 public key to check the signature with (default: the public "
                                        "half of reports.signing_key_file)")
    p.set_defaults(func=cmd_verify_report)
