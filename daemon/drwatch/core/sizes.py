"""Byte counts for people (status tables, the status page, verification budget messages)."""

from __future__ import annotations


def format_size(n: float) -> str:
    """Bytes for people, in binary units: ``512 B``, ``1.5 GiB``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"
