"""The command line's parser: one function per command adds its arguments."""

from __future__ import annotations

import argparse
import os
from typing import Any

from drwatch import __version__
from drwatch.cli.check import cmd_check, cmd_check_config, cmd_status
from drwatch.cli.records import cmd_ack, cmd_attest
from drwatch.cli.report import add_parsers as _add_report
from drwatch.cli.run import cmd_demo, cmd_golden, cmd_run
from drwatch.cli.seal import cmd_seal, cmd_seal_keygen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drwatch", description="Continuously prove that backups restore.")
    parser.add_argument("--version", action="version", version=f"drwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    _describe(sub)
    return parser


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon (without --config: the built-in demo estate)")
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_run)


def _add_check(sub: Any) -> None:
    p = sub.add_parser("check", help="run every validator once and print the compliance table")
    p.add_argument("--config", "-c")
    p.add_argument("--validator", help="only validators with this name or kind")
    p.add_argument("--asset", help="only this asset")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=cmd_check)


def _add_check_config(sub: Any) -> None:
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file")
    p.add_argument("--output", "-o", choices=["summary", "json"], default="summary")
    p.set_defaults(func=cmd_check_config)


def _add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="print the stored state without running anything")
    p.add_argument("--config", "-c")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_status)


def _add_seal(sub: Any) -> None:
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


def _add_seal_keygen(sub: Any) -> None:
    p = sub.add_parser("seal-keygen", help="create an Ed25519 key pair for signing seals (drwatch seal --sign)")
    p.add_argument("--private-key", required=True, help="private key file to create (0600; never overwritten)")
    p.add_argument("--public-key", required=True, help="public key file (PEM) for seal_signature.public_key_path")
    p.set_defaults(func=cmd_seal_keygen)


def _add_attest(sub: Any) -> None:
    p = sub.add_parser("attest", help="record that an offline copy was verified by hand")
    p.add_argument("asset")
    p.add_argument("copy")
    p.add_argument("--note", required=True)
    p.add_argument("--config", "-c")
    p.add_argument("--recovery-point", help="ISO time of the recovery point the copy holds "
                                            "(default: the newest one drwatch knows; 'none')")
    p.set_defaults(func=cmd_attest)


def _add_ack(sub: Any) -> None:
    p = sub.add_parser("ack", help="acknowledge an asset's past failures (restore_errors stops counting them)")
    p.add_argument("--asset", required=True)
    p.add_argument("--validator", help="only this validator (default: every validator of the asset)")
    p.add_argument("--by", required=True, help="who acknowledges (shown in status)")
    p.add_argument("--reason", required=True, help="why (shown in status)")
    p.add_argument("--config", "-c")
    p.set_defaults(func=cmd_ack)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="create a realistic local demo estate and its drwatch.yaml")
    p.add_argument("--dir", required=True)
    p.add_argument("--force", action="store_true", help="overwrite an existing demo in DIR")
    p.add_argument("--s3-endpoint", help="also create an S3 part (buckets on this S3-compatible endpoint)")
    p.add_argument("--s3-access-key-env", default="AWS_ACCESS_KEY_ID")
    p.add_argument("--s3-secret-key-env", default="AWS_SECRET_ACCESS_KEY")
    p.add_argument("--s3-region", default="us-east-1")
    p.add_argument("--s3-provider", default="aws")
    p.set_defaults(func=cmd_demo)


def _add_golden(sub: Any) -> None:
    p = sub.add_parser("golden", help="record goldens for inference smoke tests of model_weights")
    p.add_argument("action", choices=["record"])
    p.add_argument("--config", "-c")
    p.add_argument("--asset", required=True)
    p.add_argument("--copy", help="known-good copy to restore (default: the validator's inference copy)")
    p.add_argument("--validator", help="the model_weights validator's name (when the asset has several)")
    p.set_defaults(func=cmd_golden)


_COMMANDS = (_add_run, _add_check, _add_check_config, _add_status, _add_seal, _add_seal_keygen, _add_attest,
             _add_ack, _add_demo, _add_golden, _add_report)


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

