"""Finding and fingerprinting an asset's seal (its manifest), for checks that relate assets to each other.

The *seal digest* of a recovery point is the sha256 of its manifest's entries in canonical form
(``path\\tsize\\tsha256\\n`` in path order), written ``sha256:<hex>``. It names the exact bytes of a model
(say), independently of when or where it was sealed; ``drwatch seal --stamp embedding_model=MANIFEST``
records it in another asset's seal (the vector index embedded with that model).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from drwatch.manifest import ManifestHeader, iter_entries, read_header
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.storage.filesystem import MANIFEST_NAME

if TYPE_CHECKING:
    from drwatch.config import AssetConfig, Config


def asset_manifest_path(cfg: Config, asset: AssetConfig) -> Path | None:
    """Where the asset's seal lives (the same rules the replica validator uses), or None if it has none."""
    loc = cfg.locations.get(asset.production.location)
    root: Path | None = None
    if isinstance(loc, FilesystemLocationConfig):
        root = cfg.resolve_path(loc.path)
        if asset.production.prefix:
            root = root / asset.production.prefix
    if asset.manifest is None:
        return root / MANIFEST_NAME if root is not None else None
    path = Path(os.path.expanduser(asset.manifest))
    if path.is_absolute():
        return path
    return root / path if root is not None else cfg.resolve_path(asset.manifest)


def _digest(path: Path) -> tuple[ManifestHeader, str]:
    h = hashlib.sha256()
    with path.open(encoding="utf-8") as fh:
        header = read_header(fh)
        for entry in iter_entries(fh, header):
            h.update(f"{entry.key}\t{entry.size}\t{entry.sha256}\n".encode())
    return header, "sha256:" + h.hexdigest()


async def seal_digest(path: Path) -> tuple[ManifestHeader, str]:
    """The manifest's header and seal digest (read in a thread). Raises ManifestError, OSError."""
    return await asyncio.to_thread(_digest, path)


def _header(path: Path) -> ManifestHeader:
    with path.open(encoding="utf-8") as fh:
        return read_header(fh)


async def seal_header(path: Path) -> ManifestHeader:
    return await asyncio.to_thread(_header, path)


def seal_digest_sync(path: Path) -> str:
    """For the command line (``drwatch seal --stamp``)."""
    return _digest(path)[1]
