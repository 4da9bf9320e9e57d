"""The reference of a ``replica`` run: the asset's seal when there is one, else production's listing.

A seal that is present is read (its signature checked where the asset requires one) and dated; one dated
ahead of the clock never makes the recovery point fresh. A configured seal that is missing is a bad seal
where it could have been seen, and ``error`` (could not read) where it could not.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Severity
from drwatch.formats.manifest import ManifestError, aread
from drwatch.formats.seals import seal_absence, seal_present
from drwatch.storage.filesystem import MANIFEST_NAME, Entry
from drwatch.storage.sources import FilesystemSource, Source
from drwatch.validators.assetseal import seal_trust
from drwatch.validators.base import RunContext
from drwatch.validators.copies.live import seal_point
from drwatch.validators.copies.proof import Stream
from drwatch.validators.copies.timetrust import seal_in_future


@dataclass
class SealState:
    """What a run knows of its reference."""

    stream: AsyncIterator[Entry] | None = None  # the seal's entries, or production's listing
    recovery_point: float | None = None
    seal_time: float | None = None  # the seal's point in time (production modified after it: a live change)
    sealed: bool = False
    bad: bool = False  # missing, corrupt, or not trusted
    untimed: bool = False  # no believable time for the recovery point (time_in_future)


def manifest_path(ctx: RunContext, prod: Source) -> Path | None:
    root = prod.root if isinstance(prod, FilesystemSource) else None
    if ctx.asset.manifest is None:
        return root / MANIFEST_NAME if root is not None else None
    path = Path(os.path.expanduser(ctx.asset.manifest))
    if path.is_absolute():
        return path
    return root / path if root is not None else ctx.config.resolve_path(ctx.asset.manifest)


async def open_seal(ctx: RunContext, prod: Stream, findings: list[Finding]) -> SealState:
    """The seal of the asset, read (closed however the run ends), or why there is none."""
    seal = SealState()
    path = manifest_path(ctx, prod.src)
    if path is not None and await asyncio.to_thread(seal_present, path):
        try:
            header, seal.stream = await aread(path, ctx.exit_stack,  # closed however the run ends
                                              seal_trust(ctx.config, ctx.asset))
        except ManifestError as exc:  # corrupt, or unsigned/mis-signed where signatures are required
            seal.bad = True
            findings.append(Finding(Severity.CRITICAL, exc.code, str(exc), "manifest"))
        except OSError as exc:
            raise ValidatorError("manifest_unreadable", f"cannot read manifest: {exc.strerror}") from None
        else:
            seal.sealed = True
            seal.recovery_point = seal.seal_time = seal_point(header.sealed_at, header.extra)
            if (ahead := seal_in_future(ctx, header.sealed_at)) is not None:
                findings.append(ahead)
                seal.recovery_point, seal.untimed = None, True  # a seal dated ahead never makes it fresh
    elif ctx.asset.manifest is not None and path is not None:
        # Missing is a bad seal only where it could have been seen; anything unreadable is `error`.
        unreadable = await asyncio.to_thread(seal_absence, path,
                                             prod.src.root if isinstance(prod.src, FilesystemSource) else None,
                                             prod.state is None)
        if unreadable is not None:
            raise ValidatorError("manifest_unreadable", unreadable)
        seal.bad = True
        findings.append(Finding(Severity.CRITICAL, "manifest_missing",
                                "the configured manifest does not exist: the recovery point was "
                                "never sealed", "manifest"))
    return seal
