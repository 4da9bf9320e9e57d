"""Where an asset's seal is and how it must be signed, from the asset and configuration views (the replica,
dataset, model_weights and consistency_group validators find seals the same way)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from drwatch.formats.sealsign import SealTrust
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.storage.filesystem import MANIFEST_NAME

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView


def asset_manifest_path(cfg: ConfigView, asset: AssetView) -> Path | None:
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


def seal_trust(cfg: ConfigView, asset: AssetView) -> SealTrust | None:
    """How the asset's seal must be signed (its ``seal_signature``), for :func:`drwatch.formats.manifest.aread` and the
    readers of :mod:`drwatch.formats.seals`; None when the asset has no public key (seals are then read unverified)."""
    sig = asset.seal_signature
    if sig is None:
        return None
    return SealTrust(cfg.resolve_path(sig.public_key_path), sig.required)
