"""``check-config``, ``check`` and ``status``: what the configuration says, one run of every check, the stored state."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from drwatch.cli.common import load, missing_store, print_config_error, run_configured
from drwatch.core.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNCHECKED, ConfigError
from drwatch.core.textsafe import escape


def cmd_check_config(args: argparse.Namespace) -> int:
    from drwatch.config.model import reference_data
    from drwatch.config.preflight import (
        ca_file_warnings,
        extras_warnings,
        path_warnings,
        profile_warnings,
        seal_key_warnings,
    )
    from drwatch.config.web import describe, exposed_files, for_config
    from drwatch.core.errors import SHOWN_PROBLEMS
    from drwatch.core.secrets import missing_here

    try:
        cfg = load(args.file, require_assets=False)
        web_cfg = for_config(cfg)
    except ConfigError as exc:
        if args.output == "json":  # machine-readable on stdout too (the text goes to stderr as always)
            print(json.dumps({"valid": False, "source": exc.source, "problem_count": exc.count,
                              "problems_not_shown": exc.more,
                              "problems": [{"path": p.path, "message": p.message} for p in exc.shown]}, indent=2))
        return print_config_error(exc)
    data = reference_data(cfg)
    no_assets = [] if cfg.assets else ["assets: none defined: `drwatch seal` can use this file, `drwatch run` and "
                                       "`drwatch check` refuse it (they would watch nothing)"]
    # Warnings, not errors (the exit code stays 0): each says what `run`/`check` would do in this environment.
    warnings = [*no_assets, *exposed_files(cfg, web_cfg), *missing_here(data, cfg.base_dir), *extras_warnings(cfg),
                *path_warnings(cfg), *seal_key_warnings(cfg),
                *profile_warnings(cfg), *ca_file_warnings(cfg, data)]
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


async def _check(cfg: Any, args: argparse.Namespace) -> int:
    from drwatch.core.sandbox import SandboxManager
    from drwatch.engine.process import ProcessState
    from drwatch.engine.runner import AppState, Runner
    from drwatch.engine.scheduler import stages
    from drwatch.state.report import document, exit_code, table
    from drwatch.state.snapshot import Snapshot
    from drwatch.store import open_store
    from drwatch.validators import ORPHANS

    selected = [(a, v) for a, v in cfg.iter_validators()
                if (args.validator is None or args.validator in (v.label, v.kind))
                and (args.asset is None or a == args.asset)]
    if not selected:
        print("drwatch: no validator matches the selection", file=sys.stderr)
        return EXIT_CONFIG
    sandboxes = SandboxManager(cfg.resolve_path(cfg.limits.sandbox_dir) if cfg.limits.sandbox_dir else None)
    await asyncio.to_thread(sandboxes.sweep_orphans, ORPHANS)
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
    return run_configured(args, "drwatch", lambda cfg: _check(cfg, args), "warning" if not args.verbose else "info")


async def _status(cfg: Any, args: argparse.Namespace) -> int:
    from drwatch.state.report import document, exit_code, table
    from drwatch.state.snapshot import load_snapshot

    missing = missing_store(cfg, "drwatch status")  # opening a SQLite store creates it: status only reads
    if missing is not None:
        return missing
    snap = await load_snapshot(cfg)
    now = time.time()
    doc = document(snap, now)
    print(json.dumps(doc, indent=2) if args.output == "json" else table(doc))
    return exit_code(snap, now)


def cmd_status(args: argparse.Namespace) -> int:
    # status runs no validator: a ValidatorError is the store
    return run_configured(args, "drwatch status", lambda cfg: _status(cfg, args), "warning")
