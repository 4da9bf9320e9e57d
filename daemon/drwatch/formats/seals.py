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
import stat
from pathlib import Path

from drwatch.core.errors import ValidatorError
from drwatch.formats.manifest import ManifestHeader, check_signature, iter_entries, read_header
from drwatch.formats.sealsign import SealTrust


def _verified(path: Path, trust: SealTrust | None) -> None:
    if trust is not None:
        with path.open("rb") as raw:
            check_signature(raw, trust)


def seal_absence(path: Path, production_root: Path | None, production_readable: bool) -> str | None:
    """Why a configured seal that is not at ``path`` could not be looked for (the outcome is then ``error``),
    or None when its absence is a fact: the directory that should hold it is there and readable, and the seal
    is not in it (``manifest_missing``: never sealed). Blocking (stat calls): run it in a thread.

    A seal inside production while production is unavailable, a seal directory that is not mounted or not
    readable: could not read, whatever the config names."""
    if production_root is not None and path.is_relative_to(production_root) and not production_readable:
        return "the production location is unavailable: the seal inside it cannot be read"
    try:
        path.stat()
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"cannot read the seal {path}: {exc.strerror or type(exc).__name__}"
    else:
        return None if not path.is_dir() else f"the seal {path} is a directory"
    try:
        if not stat.S_ISDIR(path.parent.stat().st_mode):
            return f"{path.parent} is not a directory: the seal cannot be there"
        if not os.access(path.parent, os.R_OK | os.X_OK):
            return f"cannot read the directory {path.parent} that holds the seal"
    except OSError as exc:
        return f"the directory {path.parent} that holds the seal cannot be read (not mounted?): " \
               f"{exc.strerror or type(exc).__name__}"
    return None


def _digest(path: Path, trust: SealTrust | None = None) -> tuple[ManifestHeader, str]:
    _verified(path, trust)
    h = hashlib.sha256()
    with path.open(encoding="utf-8") as fh:
        header = read_header(fh)
        for entry in iter_entries(fh, header):
            h.update(f"{entry.key}\t{entry.size}\t{entry.sha256}\n".encode())
    return header, "sha256:" + h.hexdigest()


async def seal_digest(path: Path, trust: SealTrust | None = None) -> tuple[ManifestHeader, str]:
    """The manifest's header and seal digest (read in a thread), its signature verified against ``trust``
    first. Raises ManifestError (SealUnsigned, SealSignatureInvalid included), OSError (SealKeyError)."""
    return await asyncio.to_thread(_digest, path, trust)


def _header(path: Path, trust: SealTrust | None = None) -> ManifestHeader:
    _verified(path, trust)
    with path.open(encoding="utf-8") as fh:
        return read_header(fh)


async def seal_header(path: Path, trust: SealTrust | None = None) -> ManifestHeader:
    return await asyncio.to_thread(_header, path, trust)


def seal_digest_sync(path: Path) -> str:
    """For the command line (``drwatch seal --stamp``)."""
    return _digest(path)[1]


def seal_present(path: Path) -> bool:
    """Whether the seal file is there; a directory that cannot be searched (permission, I/O) is "could not
    check", never "not sealed" (``Path.is_file`` raises on EACCES)."""
    try:
        return path.is_file()
    except OSError as exc:
        raise ValidatorError("permission_denied" if isinstance(exc, PermissionError) else "location_unavailable",
                             f"cannot look for the seal in {path.parent.name or path.parent}: "
                             f"{exc.strerror or type(exc).__name__}") from None
