"""Secrets are never inline in the config: ``*_env`` names an environment variable, ``*_file`` a file.

Relative ``*_file`` paths are looked up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) first,
then next to the config. Every value read is registered so log output can redact it.
"""

from __future__ import annotations

import os
from pathlib import Path

from drwatch.errors import ConfigError, ConfigProblem

_KNOWN: set[str] = set()


def registered() -> frozenset[str]:
    return frozenset(_KNOWN)


def register(value: str) -> None:
    if len(value) >= 4:
        _KNOWN.add(value)


def register_dsn_password(dsn: str) -> None:
    """Register the password inside a DSN too (URL or key=value form), not only the whole DSN."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(dsn)
        if parts.password:
            register(parts.password)
            register(unquote(parts.password))
    except ValueError:
        pass
    for token in dsn.split():
        key, sep, value = token.partition("=")
        if sep and key.strip().lower() == "password":
            register(value.strip("'\""))


def redact(text: str) -> str:
    for value in sorted(_KNOWN, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "<redacted>")
    return text


def read_secret(field: str, env: str | None, file: str | None, base_dir: Path) -> str:
    """Read a secret; raises ConfigError naming the field (never the value)."""
    if env is not None:
        value = os.environ.get(env)
        if value is None or value == "":
            raise ConfigError("environment", [ConfigProblem(field, f"environment variable {env} is not set")])
        register(value)
        return value
    if file is not None:
        candidates = []
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        path = Path(file)
        if not path.is_absolute() and creds:
            candidates.append(Path(creds) / path)
        candidates.append(path if path.is_absolute() else base_dir / path)
        for candidate in candidates:
            try:
                value = candidate.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ConfigError("secrets", [ConfigProblem(field, f"cannot read {candidate}: {exc.strerror}")]) \
                    from None
            register(value)
            return value
        raise ConfigError("secrets", [ConfigProblem(field, f"secret file {file} not found")])
    raise ConfigError("secrets", [ConfigProblem(field, "no secret source configured")])
