"""Secrets are never inline in the config: ``*_env`` names an environment variable, ``*_file`` a file.

Relative ``*_file`` paths are looked up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) first,
then next to the config. Every value read is registered so log output can redact it.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drwatch.core.errors import ConfigError, ConfigProblem

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


SHORT = 8  # a secret shorter than this is redacted where it stands alone, not inside a longer word


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced by ``<redacted>``. A short value (under ``SHORT``
    characters: the dictionary-like ones, such as a test key ``test``) only where it stands alone (no letter,
    digit or ``_`` on either side: ``user:test@db``, ``password=test``), so it does not garble the words that
    contain it (``pytest``, ``latest.dump``); a longer one wherever it occurs."""
    for value in sorted(_KNOWN, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "<redacted>") if len(value) >= SHORT else _alone(value).sub("<redacted>", text)
    return text


@functools.lru_cache(maxsize=256)
def _alone(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(value)}(?!\w)")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_KEY_LIKE = re.compile(r"(AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}|[A-Za-z0-9+/=_-]{32,}")


def _shown(value: str) -> str:
    """A config reference as it may appear in an error: a secret pasted into a ``*_env``/``*_file`` field by
    mistake (an access key, a long token) is not echoed."""
    if _KEY_LIKE.fullmatch(value) or not value.isprintable():
        return "<the configured value: it looks like a secret, not a name>"
    return value


def read_secret(field: str, env: str | None, file: str | None, base_dir: Path) -> str:
    """Read a secret; raises ConfigError naming the field (never the value)."""
    if env is not None:
        value = os.environ.get(env)
        if value is None or value == "":
            shown = _shown(env) if _ENV_NAME.fullmatch(env) else "<not a variable name>"
            raise ConfigError("environment", [ConfigProblem(field, f"environment variable {shown} is not set")])
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
            if not value:  # never an empty credential: a truncated deploy, not a password
                raise ConfigError("secrets", [ConfigProblem(field, f"secret file {candidate} is empty")])
            register(value)
            return value
        raise ConfigError("secrets", [ConfigProblem(field, f"secret file {_shown(file)} not found")])
    raise ConfigError("secrets", [ConfigProblem(field, "no secret source configured")])


def secret_file(file: str, base_dir: Path) -> Path | None:
    """Where ``read_secret`` would read a ``*_file`` secret from (None: no such file)."""
    path = Path(file)
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    candidates = [Path(creds) / path] if creds and not path.is_absolute() else []
    candidates.append(path if path.is_absolute() else base_dir / path)
    return next((c for c in candidates if c.is_file()), None)


_NOT_SECRETS = ("web_config_file", "ca_file")


def _secret_fields(node: Any, suffix: str, path: str = "") -> list[tuple[str, str]]:
    """(field path, value) of every secret reference ``*<suffix>`` (``_file`` or ``_env``) in the config data;
    ``http.web_config_file`` is a config file and a dependency's ``ca_file`` a public CA bundle (read from its
    path, never from $CREDENTIALS_DIRECTORY): neither is a secret."""
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and key.endswith(suffix) and key not in _NOT_SECRETS and isinstance(value, str):
                out.append((where, value))
            else:
                out += _secret_fields(value, suffix, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            out += _secret_fields(item, suffix, f"{path}[{i}]")
    return out


# What a secret this process cannot read does to `run`/`check` (the truth check-config warns with; a test
# runs both on one file). The store's DSN is read when they start; every other secret when a check needs it.
AT_START = ("store.",)
_AT_START_EFFECT = "`drwatch run`, `check` and `status` in this environment exit 78 at start (the store's DSN)"
_AT_RUN_EFFECT = ("`drwatch run`/`check` in this environment start, but each check that needs it ends as `error` "
                  "(secret_unavailable)")


def missing_here(config_data: Any, base_dir: Path) -> list[str]:
    """Warnings for secrets this process could not read (an unset ``*_env`` variable, a ``*_file`` not found),
    each saying what `run`/`check` would do here: ``check-config`` runs in an admin's shell, the service gets
    its environment and credentials from its unit, so these are warnings, not errors. Blocking (stat calls)."""
    def effect(field: str) -> str:
        return f"{_AT_START_EFFECT if field.startswith(AT_START) else _AT_RUN_EFFECT}; the service may get it " \
               "from its unit"

    warnings = [f"{field}: environment variable {_shown(name)} is not set here: {effect(field)}"
                for field, name in _secret_fields(config_data, "_env") if not os.environ.get(name)]
    for field, name in _secret_fields(config_data, "_file"):
        found = secret_file(name, base_dir)
        if found is None:
            warnings.append(f"{field}: secret file {_shown(name)} is not found here (nor in $CREDENTIALS_DIRECTORY): "
                            f"{effect(field)}")
        elif _blank(found):
            warnings.append(f"{field}: secret file {found} is empty: {effect(field)}")
    return warnings


def _blank(path: Path) -> bool:
    """Whether a secret file holds nothing but whitespace (read_secret refuses it: never an empty credential)."""
    try:
        return not path.read_bytes().strip()
    except OSError:
        return False


def exposed_files(config_data: Any, base_dir: Path, extra: Iterable[tuple[str, Path]] = ()) -> list[str]:
    """Warnings for secret files every user on the host can read (mode ``o+r``).

    ``config_data`` is the configuration as data: every ``*_file`` field names a secret (read like
    :func:`read_secret` does); ``extra`` adds (field, path) pairs such as the web config and its TLS key.
    Blocking (stat calls): run it in a thread on the event loop.
    """
    found = [(field, secret_file(name, base_dir)) for field, name in _secret_fields(config_data, "_file")]
    warnings = []
    for field, path in [*found, *extra]:
        if path is None:
            continue
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & stat.S_IROTH:
            warnings.append(f"{field}: {path} is readable by every user on this host (mode "
                            f"{stat.S_IMODE(mode):04o}); restrict it (chmod o-r) or use systemd LoadCredential=")
    return warnings
