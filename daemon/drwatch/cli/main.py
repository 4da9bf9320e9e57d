"""Command line: run, check, check-config, status, seal, seal-keygen, attest, ack, demo.

Exit codes: 0 ok/compliant; 1 a rule fails or a check failed (bad backup); 2 something could not be
checked; 69 a service drwatch needs (store, listen port) is unavailable; 78 invalid configuration.
``seal`` also: 65 nothing but entries that are not regular files, 66 an unreadable input (or ``--sign`` key),
73 the seal cannot be written (nothing is written in each case).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drwatch import __version__
from drwatch.core.errors import (
    EXIT_CANTCREAT,
    EXIT_CONFIG,
    EXIT_DATAERR,
    EXIT_NOINPUT,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_UNCHECKED,
    ConfigError,
    ValidatorError,
)
from drwatch.core.textsafe import escape


def _config_path(args: argparse.Namespace) -> str | None:
    return args.config or os.environ.get("DRWATCH_CONFIG") or None


def _print_config_error(exc: ConfigError) -> int:
    print(f"drwatch: invalid configuration {escape(exc.source)}:", file=sys.stderr)
    for problem in exc.shown:  # capped: a generated file with 200k bad keys prints 51 lines
        print(f"  {escape(problem)}", file=sys.stderr)
    if exc.more:
        print(f"  {exc.more_text}", file=sys.stderr)
    return EXIT_CONFIG


def _load(path: str, require_assets: bool = True) -> Any:
    from drwatch.config.model import load_config

    return load_config(path, require_assets)


def cmd_check_config(args: argparse.Namespace) -> int:
    from drwatch.config.model import reference_data
    from drwatch.config.preflight import extras_warnings, path_warnings, profile_warnings, seal_key_warnings
    from drwatch.core.errors import SHOWN_PROBLEMS
    from drwatch.core.secrets import missing_here
    from drwatch.http.webconfig import describe, exposed_files, for_config

    try:
        cfg = _load(args.file, require_assets=False)
        web_cfg = for_config(cfg)
    except ConfigError as exc:
        if args.output == "json":  # machine-readable on stdout too (the text goes to stderr as always)
            print(json.dumps({"valid": False, "source": exc.source, "problem_count": exc.count,
                              "problems_not_shown": exc.more,
                              "problems": [{"path": p.path, "message": p.message} for p in exc.shown]}, indent=2))
        return _print_config_error(exc)
    data = reference_data(cfg)
    no_assets = [] if cfg.assets else ["assets: none defined: `drwatch seal` can use this file, `drwatch run` and "
                                       "`drwatch check` refuse it (they would watch nothing)"]
    # Warnings, not errors (the exit code stays 0): each says what `run`/`check` would do in this environment.
    warnings = [*no_assets, *exposed_files(cfg, web_cfg), *missing_here(data, cfg.base_dir), *extras_warnings(cfg),
                *path_warnings(cfg), *seal_key_warnings(cfg),
                *profile_warnings(cfg)]
    for warning in warnings[:SHOWN_PROBLEMS]:
        print(f"drwatch: warning: {escape(warning)}", file=sys.stderr)
    if len(warnings) > SHOWN_PROBLEMS:
        print(f"drwatch: warning: ... and {len(warnings) - SHOWN_PROBLEMS} more warnings", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(data, indent=2))
        return EXIT_OK
    web = describe(web_cfg)
    print(f"{args.file}: OK")
    print(f"  store: {'postgres' if cfg.store.postgres else f'sqlite {cfg.sqlite_path()}'}")
    print(f"  http: {cfg.http.listen if cfg.http.enabled else 'disabled'}"
          f"{' tls' if web['tls'] else ''}{' basic-auth' if web['basic_auth'] else ''}")
    print(f"  locations: {len(cfg.locations)}")
    for name, loc in cfg.locations.items():
        print(f"    {name}: {loc.kind} site={loc.site or '-'} media={loc.media or '-'}"
              f"{' offline' if loc.offline else ''}")
    print(f"  assets: {len(cfg.assets)}")
    for name, asset in cfg.assets.items():
        vals = ", ".join(f"{v.label}({v.kind})" for v in asset.validators) or "no validators"
        print(f"    {name}: {1 + len(asset.copies)} copies (production included); {vals}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from drwatch.core import logs
    from drwatch.engine.daemon import Daemon

    path = _config_path(args)
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
        cfg = _load(path)
    except ConfigError as exc:
        return _print_config_error(exc)
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
        return _print_config_error(exc)
    except ValidatorError as exc:
        print(f"drwatch: {escape(exc.message)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except OSError as exc:
        print(f"drwatch: cannot start: {exc.strerror or exc} "
              f"(is {cfg.http.listen} already in use? set http.listen)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_OK


class _Progress:
    """One updating line on a tty while checks run."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.started = time.monotonic()

    def update(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            elapsed = time.monotonic() - self.started
            sys.stderr.write(f"\r\033[K[{self.done}/{self.total}] {elapsed:5.1f}s {escape(label)}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


async def _check(cfg: Any, path: str, args: argparse.Namespace) -> int:
    from drwatch.core.sandbox import SandboxManager
    from drwatch.engine.process import ProcessState
    from drwatch.engine.runner import AppState, Runner
    from drwatch.engine.scheduler import stages
    from drwatch.state.report import document, exit_code, table
    from drwatch.state.snapshot import Snapshot
    from drwatch.store import open_store

    selected = [(a, v) for a, v in cfg.iter_validators()
                if (args.validator is None or args.validator in (v.label, v.kind))
                and (args.asset is None or a == args.asset)]
    if not selected:
        print("drwatch: no validator matches the selection", file=sys.stderr)
        return EXIT_CONFIG
    sandboxes = SandboxManager(cfg.resolve_path(cfg.limits.sandbox_dir) if cfg.limits.sandbox_dir else None)
    await asyncio.to_thread(sandboxes.sweep_orphans)
    store = open_store(cfg)
    await store.open()
    try:
        state = AppState(cfg, Snapshot.from_state(cfg, await store.load_state()),
                         ProcessState(started_at=time.time()))
        runner = Runner(state, store, sandboxes)
        runner.warn_problems = False  # the table says which checks did not pass; --verbose logs them
        progress = _Progress(len(selected), sys.stderr.isatty() and args.output == "table")
        try:
            async def one(asset: str, vcfg: Any) -> Any:
                res = await runner.execute(asset, vcfg)
                progress.update(f"{asset}/{vcfg.label}: {res.outcome.value}")
                return res

            # Checks across assets (consistency groups) judge the results of the others: they run after them
            # (the daemon's scheduler follows the same order).
            results = []
            for stage in stages(cfg, selected):
                results += await asyncio.gather(*(one(a, v) for a, v in stage))
        finally:
            progress.close()
            await runner.aclose()
        if runner.pending:
            print(f"drwatch: {len(runner.pending)} result(s) could not be written to the store",
                  file=sys.stderr)
        else:  # the verification ledger's summaries are written by the runs themselves: read them back
            state.snapshot = state.snapshot.refreshed(await store.load_state())
        now = time.time()
        doc = document(state.snapshot, now, results)
        if args.output == "json":
            print(json.dumps(doc, indent=2))
        else:
            print(table(doc))
        code = exit_code(state.snapshot, now, results,
                         None if args.asset is None and args.validator is None else {a for a, _ in selected})
        return EXIT_UNCHECKED if runner.pending and code == EXIT_OK else code
    finally:
        await store.close()


def cmd_check(args: argparse.Namespace) -> int:
    from drwatch.core import logs

    path = _config_path(args)
    if path is None:
        print("drwatch: pass --config FILE (or set DRWATCH_CONFIG)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        cfg = _load(path)
        logs.configure("warning" if not args.verbose else "info", cfg.logging.format)
        return asyncio.run(_check(cfg, path, args))
    except ConfigError as exc:
        return _print_config_error(exc)
    except ValidatorError as exc:  # the store (or another service check needs) is unavailable: not a verdict
        print(f"drwatch: {escape(exc.message)}", file=sys.stderr)
        return EXIT_UNAVAILABLE


async def _status(cfg: Any, args: argparse.Namespace) -> int:
    from drwatch.state.report import document, exit_code, table
    from drwatch.state.snapshot import Snapshot
    from drwatch.store import open_store

    if cfg.store.postgres is None:  # opening a SQLite store creates it: status only reads one that exists
        path = cfg.sqlite_path()
        try:
            path.stat()
        except (FileNotFoundError, NotADirectoryError):
            hint = ("" if cfg.store.sqlite is not None or os.environ.get("STATE_DIRECTORY") else
                    " (the service keeps it in its state directory: run with STATE_DIRECTORY=/var/lib/drwatch, "
                    "or set store.sqlite)")
            print(f"drwatch status: no store at {path}: drwatch has not run with this configuration{hint}",
                  file=sys.stderr)
            return EXIT_UNAVAILABLE
        except OSError as exc:
            print(f"drwatch status: cannot read the store {path}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    store = open_store(cfg)
    await store.open()
    try:
        snap = Snapshot.from_state(cfg, await store.load_state())
    finally:
        await store.close()
    now = time.time()
    doc = document(snap, now)
    print(json.dumps(doc, indent=2) if args.output == "json" else table(doc))
    return exit_code(snap, now)


def cmd_status(args: argparse.Namespace) -> int:
    from drwatch.core import logs

    path = _config_path(args)
    if path is None:
        print("drwatch: pass --config FILE (or set DRWATCH_CONFIG)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        cfg = _load(path)
        logs.configure("warning", cfg.logging.format)
        return asyncio.run(_status(cfg, args))
    except ConfigError as exc:
        return _print_config_error(exc)
    except ValidatorError as exc:  # status runs no validator: this is the store
        print(f"drwatch status: {escape(exc.message)}", file=sys.stderr)
        return EXIT_UNAVAILABLE


async def _seal_s3(args: argparse.Namespace, url: str, signer: Any = None) -> Any:
    """Seal a recovery point in S3: sizes and sha256 (from full-object SHA256 checksums where the store
    keeps them, else by reading) or blake3 (always by reading). Reads only; the manifest goes to a local file
    or stdout."""
    from drwatch.formats.manifest import seal_entries
    from drwatch.formats.parquet import ParquetFacts, available, fetch_facts, s3_fetcher
    from drwatch.storage.config import S3LocationConfig
    from drwatch.storage.s3 import S3Pool
    from drwatch.storage.sources import S3Source

    path = _config_path(args)
    if path is None or not args.location:
        raise SystemExit("drwatch seal: an s3:// URL needs --config FILE and --location NAME (endpoint, credentials)")
    cfg = _load(path, require_assets=False)
    loc = cfg.locations.get(args.location)
    if not isinstance(loc, S3LocationConfig):
        raise SystemExit(f"drwatch seal: location {args.location!r} is not an S3 location in {path}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if bucket != loc.bucket:
        raise SystemExit(f"drwatch seal: {url} is not in bucket {loc.bucket!r} of location {args.location!r}")
    pool = S3Pool(cfg.base_dir)
    try:
        source = S3Source(args.location, "production", args.location, loc, pool.get(args.location, loc), prefix)

        async def digest(entry: Any) -> tuple[str, int]:
            if args.algorithm != "sha256":  # no store keeps a BLAKE3 checksum: read
                return await source.sha256(entry, args.algorithm)
            head = await source.head(entry)
            value = head.checksums.get("SHA256") if head is not None else None
            if value is not None:  # the store's own full-object SHA256: no need to read the object
                return base64.b64decode(value).hex(), int(entry.size)
            return await source.sha256(entry)

        async def footer(entry: Any) -> ParquetFacts:  # a Parquet file's footer facts, by ranged GETs
            return await fetch_facts(s3_fetcher(source.client, prefix, entry.key), int(entry.size))

        out_path = Path(args.out) if args.out not in (None, "-") else None
        return await seal_entries(source.entries(), digest, 16, out=sys.stdout if out_path is None else None,
                                  out_path=out_path, extra={"source": url, **_seal_extra(args)},
                                  parquet=footer if available() else None, signer=signer, algorithm=args.algorithm)
    finally:
        await pool.close()


def _seal_extra(args: argparse.Namespace) -> dict[str, str]:
    """Header fields from ``--meta KEY=VALUE`` and ``--stamp KEY=MANIFEST`` (the seal digest of MANIFEST)."""
    from drwatch.formats.manifest import ManifestError
    from drwatch.formats.seals import seal_digest_sync

    extra: dict[str, str] = {}
    for opt, items in (("--meta", args.meta or []), ("--stamp", args.stamp or [])):
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key or not value or key == "source":
                raise SystemExit(f"drwatch seal: {opt} expects KEY=VALUE, got {item!r}")
            if opt == "--stamp":
                try:
                    value = seal_digest_sync(Path(value))
                except (ManifestError, OSError) as exc:
                    raise SystemExit(f"drwatch seal: --stamp {key}: cannot read manifest {value}: {exc}") from None
            extra[key] = value
    return extra


class _SealRefused(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class _Skipped:
    """Entries the walk passed over (not regular files): counted by kind, the first few named."""

    SHOWN = 5

    def __init__(self) -> None:
        self.count = 0
        self.kinds: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, path: str, kind: str) -> None:  # from the walk's worker thread
        self.count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.names) < self.SHOWN:
            self.names.append(f"{path} ({kind})")

    def warn(self, root: Path) -> None:
        if not self.count:
            return
        kinds = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(self.kinds.items()))
        more = f", and {self.count - len(self.names)} more" if self.count > len(self.names) else ""
        what = "entry that is not a regular file" if self.count == 1 else "entries that are not regular files"
        print(f"drwatch seal: warning: skipped {self.count} {what} under {escape(root)} ({kinds}): "
              f"{escape(', '.join(self.names))}"
              f"{more}. drwatch verifies regular files only and does not follow symlinks: back up and seal the "
              "files themselves (e.g. copy with `cp -rL`)", file=sys.stderr)


async def _seal_local(root: Path, workers: int, extra: dict[str, str] | None, out_path: Path | None,
                      skipped: _Skipped, signer: Any = None, algorithm: str = "sha256") -> Any:
    """``manifest.seal_directory`` with its refusals turned into _SealRefused (nothing is written)."""
    from drwatch.formats.manifest import SealEmptyError, SealInputError, seal_directory

    try:
        return await seal_directory(root, sys.stdout if out_path is None else None, out_path, workers, extra,
                                    on_skipped=skipped, signer=signer, algorithm=algorithm)
    except SealInputError as exc:
        raise _SealRefused(EXIT_NOINPUT, str(exc)) from None
    except SealEmptyError as exc:
        raise _SealRefused(EXIT_DATAERR, str(exc)) from None
    except BrokenPipeError:
        raise
    except OSError as exc:  # reading raised SealInputError already: this is writing the seal
        raise _SealRefused(EXIT_CANTCREAT, f"cannot write {out_path or 'stdout'}: {exc.strerror or exc}") from None


def cmd_seal(args: argparse.Namespace) -> int:
    from drwatch.storage.filesystem import MANIFEST_NAME

    target = args.target or args.location_path
    if target is None:
        print("drwatch seal: give a directory (--location-path DIR) or s3://bucket/prefix", file=sys.stderr)
        return EXIT_CONFIG
    extra = _seal_extra(args) or None
    from drwatch.storage.hashing import AlgorithmUnavailable, new_hash

    try:
        new_hash(args.algorithm)
    except AlgorithmUnavailable as exc:
        print(f"drwatch seal: --algorithm {args.algorithm}: {exc.strerror}; nothing written", file=sys.stderr)
        return EXIT_CONFIG
    signer = None
    if args.sign is not None:
        from drwatch.formats.sealsign import Signer, SigningKeyError

        try:
            signer = Signer.load(Path(args.sign))
        except SigningKeyError as exc:  # the message never names the key file
            print(f"drwatch seal: --sign: {exc}; nothing written", file=sys.stderr)
            return EXIT_NOINPUT
    if target.startswith("s3://"):
        try:
            header = asyncio.run(_seal_s3(args, target, signer))
        except ConfigError as exc:
            return _print_config_error(exc)
        except ValidatorError as exc:
            print(f"drwatch seal: {escape(exc.message)}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        dest = args.out if args.out not in (None, "-") else "stdout"
    else:
        root = Path(target)
        if not root.is_dir():
            print(f"drwatch seal: {escape(root)} is not a directory", file=sys.stderr)
            return EXIT_CONFIG
        out = None if args.out == "-" else Path(args.out) if args.out else root / MANIFEST_NAME
        skipped = _Skipped()
        try:
            header = asyncio.run(_seal_local(root, args.workers, extra, out, skipped, signer, args.algorithm))
        except _SealRefused as exc:
            skipped.warn(root)
            print(f"drwatch seal: {escape(exc.message)}; nothing written", file=sys.stderr)
            return exc.code
        skipped.warn(root)
        dest = str(out) if out is not None else "stdout"
    signed = f", signed (key {signer.key_id})" if signer is not None else ""
    print(f"sealed {header.files} objects, {header.bytes} bytes{signed} -> {dest}", file=sys.stderr)
    return EXIT_OK


def cmd_seal_keygen(args: argparse.Namespace) -> int:
    from drwatch.formats.sealsign import generate

    private, public = Path(args.private_key), Path(args.public_key)
    try:
        kid = generate(private, public)
    except FileExistsError:
        print("drwatch seal-keygen: the private key file exists already; nothing written", file=sys.stderr)
        return EXIT_CANTCREAT
    except OSError as exc:
        print(f"drwatch seal-keygen: cannot write the key pair: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANTCREAT
    print(f"key {kid}: public key -> {escape(public)} (set assets.<name>.seal_signature.public_key_path to it); "
          "keep the private key with the backup job only", file=sys.stderr)
    return EXIT_OK


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
    path = _config_path(args)
    if path is None:
        print("drwatch: pass --config FILE (or set DRWATCH_CONFIG)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_attest(_load(path), args))
    except ConfigError as exc:
        return _print_config_error(exc)
    except ValidatorError as exc:
        print(f"drwatch attest: {escape(exc.message)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
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
    path = _config_path(args)
    if path is None:
        print("drwatch: pass --config FILE (or set DRWATCH_CONFIG)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_ack(_load(path), args))
    except ConfigError as exc:
        return _print_config_error(exc)
    except ValidatorError as exc:
        print(f"drwatch ack: {escape(exc.message)}", file=sys.stderr)
        return EXIT_UNAVAILABLE


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

    path = _config_path(args)
    if path is None:
        print("drwatch: pass --config FILE (or set DRWATCH_CONFIG)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        cfg = _load(path)
        out, gold = asyncio.run(record_goldens(cfg, args.asset, args.copy, args.validator))
    except ConfigError as exc:
        return _print_config_error(exc)
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


def _add_golden_parser(sub: Any) -> None:
    p = sub.add_parser("golden", help="record goldens for inference smoke tests of model_weights")
    p.add_argument("action", choices=["record"])
    p.add_argument("--config", "-c")
    p.add_argument("--asset", required=True)
    p.add_argument("--copy", help="known-good copy to restore (default: the validator's inference copy)")
    p.add_argument("--validator", help="the model_weights validator's name (when the asset has several)")
    p.set_defaults(func=cmd_golden)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drwatch", description="Continuously prove that backups restore.")
    parser.add_argument("--version", action="version", version=f"drwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon (without --config: the built-in demo estate)")
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="run every validator once and print the compliance table")
    p.add_argument("--config", "-c")
    p.add_argument("--validator", help="only validators with this name or kind")
    p.add_argument("--asset", help="only this asset")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file")
    p.add_argument("--output", "-o", choices=["summary", "json"], default="summary")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("status", help="print the stored state without running anything")
    p.add_argument("--config", "-c")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("seal", help="write a manifest (sizes, sha256) of a recovery point (reads only)")
    p.add_argument("target", nargs="?", help="s3://bucket/prefix (with --config and --location) or a directory")
    p.add_argument("--location-path", help="directory holding the recovery point")
    p.add_argument("--location", help="S3 location name in --config (endpoint, credentials)")
    p.add_argument("--config", "-c")
    p.add_argument("--out", help="manifest file (default DIR/.drwatch-manifest.jsonl; '-' for stdout)")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--algorithm", choices=("sha256", "blake3"), default="sha256",
                   help="digest of every file (default sha256; blake3 hashes 4-10x faster per core, but S3 "
                        "SHA256 checksums can no longer stand in for reads)")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE", help="record a field in the seal's header")
    p.add_argument("--stamp", action="append", metavar="KEY=MANIFEST",
                   help="record another seal's digest (e.g. embedding_model=model/.drwatch-manifest.jsonl)")
    p.add_argument("--sign", metavar="KEYFILE",
                   help="sign the seal with this PEM Ed25519 private key (drwatch seal-keygen, or "
                        "openssl genpkey -algorithm ed25519)")
    p.set_defaults(func=cmd_seal)

    p = sub.add_parser("seal-keygen", help="create an Ed25519 key pair for signing seals (drwatch seal --sign)")
    p.add_argument("--private-key", required=True, help="private key file to create (0600; never overwritten)")
    p.add_argument("--public-key", required=True, help="public key file (PEM) for seal_signature.public_key_path")
    p.set_defaults(func=cmd_seal_keygen)

    p = sub.add_parser("attest", help="record that an offline copy was verified by hand")
    p.add_argument("asset")
    p.add_argument("copy")
    p.add_argument("--note", required=True)
    p.add_argument("--config", "-c")
    p.add_argument("--recovery-point", help="ISO time of the recovery point the copy holds "
                                            "(default: the newest one drwatch knows; 'none')")
    p.set_defaults(func=cmd_attest)

    p = sub.add_parser("ack", help="acknowledge an asset's past failures (restore_errors stops counting them)")
    p.add_argument("--asset", required=True)
    p.add_argument("--validator", help="only this validator (default: every validator of the asset)")
    p.add_argument("--by", required=True, help="who acknowledges (shown in status)")
    p.add_argument("--reason", required=True, help="why (shown in status)")
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_ack)

    p = sub.add_parser("demo", help="create a realistic local demo estate and its drwatch.yaml")
    p.add_argument("--dir", required=True)
    p.add_argument("--force", action="store_true", help="overwrite an existing demo in DIR")
    p.add_argument("--s3-endpoint", help="also create an S3 part (buckets on this S3-compatible endpoint)")
    p.add_argument("--s3-access-key-env", default="AWS_ACCESS_KEY_ID")
    p.add_argument("--s3-secret-key-env", default="AWS_SECRET_ACCESS_KEY")
    p.add_argument("--s3-region", default="us-east-1")
    p.add_argument("--s3-provider", default="aws")
    p.set_defaults(func=cmd_demo)
    _add_golden_parser(sub)
    _describe(sub)
    return parser


def _describe(sub: Any) -> None:
    """Each command's ``--help``: what it does (its one-line help) and its exit statuses, from the table in
    :mod:`drwatch.core.errors` (the one place they are written down)."""
    from drwatch.core.errors import COMMAND_EXITS, exit_codes_epilog

    helps = {action.dest: action.help for action in sub._choices_actions}
    for name, p in sub.choices.items():
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        if p.description is None and helps.get(name):
            p.description = f"{helps[name][0].upper()}{helps[name][1:]}."
        if name in COMMAND_EXITS:
            p.epilog = exit_codes_epilog(name)
        for action in p._actions:
            if action.dest == "config" and action.help is None:
                action.help = "configuration file (default: $DRWATCH_CONFIG)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `drwatch status | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
