"""Configuration: YAML validated by pydantic v2 (``extra="forbid"``), every problem reported with its path.

Top-level keys: ``store``, ``http``, ``limits``, ``locations``, ``assets``, ``consistency_groups``,
``compliance``, ``logging``. Secrets are never inline: fields ending in ``_env`` or ``_file`` name where
they are (see :mod:`drwatch.secrets`).
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drwatch.durations import Duration
from drwatch.errors import ConfigError, ConfigProblem
from drwatch.storage.config import LOCATION_KINDS, LocationConfig
from drwatch.validators.config import VALIDATOR_KINDS, ValidatorConfig

DEFAULT_PORT = 10099
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"invalid {what} name {value!r}: use letters, digits, '_', '.', '-' (max 63, no leading symbol)"
        )
    return value


class PostgresStoreConfig(_Model):
    dsn_env: str | None = None
    dsn_file: str | None = None
    pool_max: int = Field(default=5, ge=1, le=100)
    connect_timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _one_source(self) -> PostgresStoreConfig:
        if (self.dsn_env is None) == (self.dsn_file is None):
            raise ValueError("set exactly one of dsn_env (environment variable) or dsn_file (file path)")
        return self


class StoreConfig(_Model):
    sqlite: str | None = None
    postgres: PostgresStoreConfig | None = None
    retention: Duration = timedelta(days=90)

    @model_validator(mode="after")
    def _one_backend(self) -> StoreConfig:
        if self.sqlite is not None and self.postgres is not None:
            raise ValueError("choose one store backend: sqlite or postgres, not both")
        return self


class HttpConfig(_Model):
    listen: str = DEFAULT_LISTEN
    enabled: bool = True

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen must be HOST:PORT (e.g. {DEFAULT_LISTEN}), got {value!r}")
        if not host:
            raise ValueError("listen needs a host (use 0.0.0.0 explicitly to listen on all interfaces)")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LimitsConfig(_Model):
    max_concurrent: int = Field(default=4, ge=1, le=1000)
    per_location: int = Field(default=2, ge=1, le=1000)
    default_timeout: Duration = timedelta(hours=1)
    drain_timeout: Duration = timedelta(seconds=30)
    hash_workers: int = Field(default=2, ge=1, le=64)
    sandbox_dir: str | None = None


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class CopyRef(_Model):
    location: str
    prefix: str = ""
    name: str | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        parts = [p for p in value.strip("/").split("/") if p]
        if any(p == ".." for p in parts):
            raise ValueError("prefix may not contain '..'")
        return "/".join(parts)

    @property
    def label(self) -> str:
        return self.name or self.location


class AssetConfig(_Model):
    rpo: Duration
    rto: Duration | None = None
    description: str = ""
    production: CopyRef
    copies: list[CopyRef] = Field(default_factory=list)
    manifest: str | None = None
    validators: list[ValidatorConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> AssetConfig:
        labels = [c.label for c in self.copies]
        if "production" in labels:
            raise ValueError("'production' is reserved: name the copy differently")
        dupes = sorted({n for n in labels if labels.count(n) > 1})
        if dupes:
            raise ValueError(
                f"copies {dupes} appear twice: give copies in the same location distinct 'name's"
            )
        for label in labels:
            _check_name(label, "copy")
        names = [v.label for v in self.validators]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"validators {dupes} appear twice: give each a distinct 'name'")
        return self


class ConsistencyGroupConfig(_Model):
    assets: list[str] = Field(min_length=2)
    max_skew: Duration


class ComplianceConfig(_Model):
    copies: int = Field(default=3, ge=0)
    media: int = Field(default=2, ge=0)
    offsite: int = Field(default=1, ge=0)
    immutable: int = Field(default=1, ge=0)
    window: Duration = timedelta(days=7)
    drill_max_age: Duration | None = None
    offline_attestation_max_age: Duration = timedelta(days=30)
    allow_governance: bool = False
    min_retention_remaining: Duration = timedelta(days=7)
    require_independent_credentials: bool = False


class Config(_Model):
    store: StoreConfig = Field(default_factory=StoreConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    locations: dict[str, LocationConfig] = Field(default_factory=dict)
    assets: dict[str, AssetConfig] = Field(default_factory=dict)
    consistency_groups: dict[str, ConsistencyGroupConfig] = Field(default_factory=dict)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)

    # Not part of the file: where it came from (relative paths resolve against its directory).
    source: Annotated[str, Field(exclude=True)] = ""
    digest: Annotated[str, Field(exclude=True)] = ""

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    def resolve_path(self, value: str) -> Path:
        path = Path(os.path.expandvars(os.path.expanduser(value)))
        return path if path.is_absolute() else self.base_dir / path

    def sqlite_path(self) -> Path:
        if self.store.sqlite is not None:
            return self.resolve_path(self.store.sqlite)
        state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        if state_dir:
            return Path(state_dir) / "drwatch.sqlite"
        return self.base_dir / "drwatch.sqlite"

    def iter_validators(self) -> list[tuple[str, ValidatorConfig]]:
        return [(a, v) for a, asset in self.assets.items() for v in asset.validators]


def _semantic_problems(cfg: Config) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for name in cfg.locations:
        try:
            _check_name(name, "location")
        except ValueError as exc:
            problems.append(ConfigProblem(f"locations.{name}", str(exc)))
    for aname, asset in cfg.assets.items():
        try:
            _check_name(aname, "asset")
        except ValueError as exc:
            problems.append(ConfigProblem(f"assets.{aname}", str(exc)))
        refs = [("production", asset.production), *((f"copies[{i}]", c) for i, c in enumerate(asset.copies))]
        for where, ref in refs:
            if ref.location not in cfg.locations:
                known = ", ".join(sorted(cfg.locations)) or "none defined"
                problems.append(
                    ConfigProblem(
                        f"assets.{aname}.{where}.location",
                        f"unknown location {ref.location!r} (known: {known})",
                    )
                )
        for i, v in enumerate(asset.validators):
            try:
                _check_name(v.label, "validator")
            except ValueError as exc:
                problems.append(ConfigProblem(f"assets.{aname}.validators[{i}].name", str(exc)))
            problems.extend(
                ConfigProblem(f"assets.{aname}.validators[{i}].{p.path}".rstrip("."), p.message)
                for p in v.cross_check(aname, asset, cfg)
            )
    for gname, group in cfg.consistency_groups.items():
        for i, member in enumerate(group.assets):
            if member not in cfg.assets:
                problems.append(
                    ConfigProblem(f"consistency_groups.{gname}.assets[{i}]", f"unknown asset {member!r}")
                )
    return problems


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    prev: int | str | None = None
    parent: int | str | None = None
    for item in loc:
        # pydantic puts the discriminator tag into the location of tagged unions: drop it.
        is_tag = isinstance(item, str) and (
            (isinstance(prev, int) and item in VALIDATOR_KINDS)
            or (parent == "locations" and item in LOCATION_KINDS)
        )
        if is_tag or item in ("function-after", "function-before"):
            prev = item
            continue
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else str(item)
        parent, prev = prev, item
    return out


def _problems_from_validation(exc: ValidationError) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx") or {}
            msg = f"unknown kind {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        problems.append(ConfigProblem(_format_loc(tuple(err["loc"])), msg))
    return problems


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate YAML text; raises ConfigError listing every problem with its path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [ConfigProblem(where, f"malformed YAML: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigProblem("", "the top level must be a mapping of keys")])
    digest = hashlib.sha256(text.encode()).hexdigest()
    try:
        cfg = Config.model_validate({**data, "source": source, "digest": digest})
    except ValidationError as exc:
        raise ConfigError(source, _problems_from_validation(exc)) from None
    problems = _semantic_problems(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a config file. Raises ConfigError (also for unreadable files)."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [ConfigProblem("", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [ConfigProblem("", "not UTF-8 text")]) from None
    return parse_config(text, str(Path(source).resolve()))


def config_or_problem(path: str) -> tuple[Config | None, ConfigError | None]:
    try:
        return load_config(path), None
    except ConfigError as exc:
        return None, exc


def reference_data(cfg: Config) -> dict[str, Any]:
    """The config as data (for ``check-config --output json`` and debugging); secrets are references only."""
    return cfg.model_dump(mode="json")
