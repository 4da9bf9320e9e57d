"""``seal`` (a manifest of a recovery point, reads only) and ``seal-keygen``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from pathlib import Path
from typing import Any

from drwatch.cli.common import config_path, load, print_config_error
from drwatch.core.errors import (
    EXIT_CANTCREAT,
    EXIT_CONFIG,
    EXIT_DATAERR,
    EXIT_NOINPUT,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    ConfigError,
    ValidatorError,
)
from drwatch.core.textsafe import escape


async def _seal_s3(args: argparse.Namespace, url: str, signer: Any = None) -> Any:
    """Seal a recovery point in S3: sizes and sha256 (from full-object SHA256 checksums where the store
    keeps them, else by reading) or blake3 (always by reading). Reads only; the manifest goes to a local file
    or stdout."""
    from drwatch.formats.parquet import ParquetFacts, available, fetch_facts, s3_fetcher
    from drwatch.formats.sealing import seal_entries
    from drwatch.storage.config import S3LocationConfig
    from drwatch.storage.s3 import S3Pool
    from drwatch.storage.sources import S3Source

    path = config_path(args)
    if path is None or not args.location:
        raise SystemExit("drwatch seal: an s3:// URL needs --config FILE and --location NAME (endpoint, credentials)")
    cfg = load(path, require_assets=False)
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
    """``sealing.seal_directory`` with its refusals turned into _SealRefused (nothing is written)."""
    from drwatch.formats.sealing import SealEmptyError, SealInputError, seal_directory

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
            return print_config_error(exc)
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

