"""Configuration: YAML validated by pydantic v2 (``extra="forbid"``), every problem reported with its path.

Top-level keys: ``store``, ``http``, ``limits``, ``locations``, ``assets``, ``consistency_groups``,
``compliance``, ``logging``, ``cluster``. Secrets are never inline: fields ending in ``_env`` or ``_file`` name where
they are (see :mod:`drwatch.core.secrets`).
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

from drwatch.cluster.config import ClusterConfig, cluster_problems
from drwatch.core.durations import Duration
from drwatch.core.errors import ConfigError, ConfigProblem
from drwatch.formats.sealsign import SealSignatureConfig
from drwatch.storage.config import LOCATION_KINDS, LocationConfig, S3LocationConfig, s3_place
from drwatch.validators.config import VALIDATOR_KINDS, ValidatorConfig
from drwatch.validators.consistency_group import DocumentsCheck, EmbeddingModelCheck, group_problems
from drwatch.validators.copies.ledger import VerificationPolicy

DEFAULT_PORT = 10099
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by drwatch, never by the file (see parse_config).
_INTERNAL_FIELDS = ("source", "digest")

# Counts are strict: YAML `yes`/`true` or `2.5` is a mistake, not a number.
Count = Annotated[int, Field(strict=True)]


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
    pool_max: Count = Field(default=5, ge=1, le=100)
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
    web_config_file: str | None = None  # TLS / basic auth, exporter-toolkit format (drwatch.http.webconfig)

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
    max_concurrent: Count = Field(default=4, ge=1, le=1000)
    per_location: Count = Field(default=2, ge=1, le=1000)
    default_timeout: Duration = timedelta(hours=1)
    drain_timeout: Duration = timedelta(seconds=30)
    hash_workers: Count = Field(default=2, ge=1, le=64)
    sandbox_dir: str | None = None
    pending_results: Count = Field(default=10_000, ge=1, le=1_000_000)  # memory queue while the store is away

    @field_validator("default_timeout")
    @classmethod
    def _timeout_above_zero(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be above zero")
        return value


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


class ProductionRef(CopyRef):
    # True: production must stay equal to the seal (model weights, a frozen dataset); any change since the
    # seal fails. False: production is live data, changes since the seal are expected and only counted.
    frozen: bool = False


class AssetConfig(_Model):
    rpo: Duration
    rto: Duration | None = None
    description: str = ""
    production: ProductionRef
    copies: list[CopyRef] = Field(default_factory=list)
    manifest: str | None = None
    # The public key the backup job's seals are signed with (drwatch seal --sign); see drwatch.formats.sealsign.
    seal_signature: SealSignatureConfig | None = None
    validators: list[ValidatorConfig] = Field(default_factory=list)
    verification: VerificationPolicy | None = None  # rolling read coverage under a budget (copies.ledger)

    # Copy and validator names (unique, valid, 'production' reserved) are checked on the raw data by
    # _reference_problems, which can point at the offending list entry.

    @field_validator("rpo")
    @classmethod
    def _rpo(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("rpo must be greater than zero")
        return value


class ConsistencyGroupConfig(_Model):
    """Assets restored together (a RAG system: index, model, documents); checked by a ``consistency_group``
    validator on one member."""

    assets: list[str] = Field(min_length=2)
    max_skew: Duration
    embedding_model: EmbeddingModelCheck | None = None
    documents: DocumentsCheck | None = None


class ComplianceConfig(_Model):
    copies: Count = Field(default=3, ge=0)
    media: Count = Field(default=2, ge=0)
    offsite: Count = Field(default=1, ge=0)
    immutable: Count = Field(default=1, ge=0)
    window: Duration = timedelta(days=7)
    drill_max_age: Duration | None = None
    offline_attestation_max_age: Duration = timedelta(days=30)
    allow_governance: bool = False
    min_retention_remaining: Duration = timedelta(days=7)
    require_independent_credentials: bool = False
    provider_counts_as_media: bool = False
    # How far ahead of this host's clock a modification or seal time may lie and still be believed.
    clock_skew: Duration = timedelta(minutes=5)


class MetricsConfig(_Model):
    """What /metrics exports beyond the series the shipped alerts and dashboard need (docs/metrics.md)."""

    # drwatch_validator_duration_seconds with every bucket (16 per validator); off: only le="+Inf", _sum, _count.
    duration_histograms: bool = False


class Config(_Model):
    store: StoreConfig = Field(default_factory=StoreConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    locations: dict[str, LocationConfig] = Field(default_factory=dict)
    assets: dict[str, AssetConfig] = Field(default_factory=dict)
    consistency_groups: dict[str, ConsistencyGroupConfig] = Field(default_factory=dict)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)  # several nodes, one store (drwatch.cluster)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)  # opt-in series (the series budget)

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


_MAX_DEPTH = 64  # nesting; a real config is under 10 deep
_MAX_EXPANDED = 1_000_000  # values after alias expansion, when aliases multiply the document over 10x


def _check_shape(root: yaml.Node) -> None:
    """Refuse what would hang or crash the validation: nesting deeper than _MAX_DEPTH (or a recursive
    alias) and alias bombs ("billion laughs": a few lines that expand to billions of values)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        if done:
            sizes[id(node)] = size = 1 + sum(sizes[id(c)] for c in children)
            if size > _MAX_EXPANDED and size > 10 * len(sizes):
                raise yaml.composer.ComposerError(None, None, f"aliases expand this document to over "
                                                  f"{_MAX_EXPANDED:,} values", node.start_mark)
            continue
        if depth > _MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {_MAX_DEPTH} levels (or an "
                                              "alias refers to itself)", node.start_mark)
        if id(node) not in sizes:
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


class _UniqueKeys(yaml.constructor.SafeConstructor):
    """Rejects a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merge keys (`<<`) may legitimately be overridden
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1}); "
                    "YAML would keep only the last: merge them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    """The pure-Python SafeLoader with unique keys, refusing documents nested too deeply or inflated by aliases
    (see _check_shape). Its error messages are the most precise (they name the character, the alias)."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > _MAX_DEPTH:  # the scanner slows down quadratically with [[[[...: stop early
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {_MAX_DEPTH} levels",
                                            self.get_mark())

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            _check_shape(node)
        return node


_LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))
# Broken files up to this size are parsed again by the Python loader for its more precise message; the
# libyaml loader parses ~10x faster (a 10 MB file: ~2 s instead of ~15 s).
_REPARSE_MAX = 1 << 20

if _LIBYAML:
    from yaml._yaml import CParser

    class _CUniqueKeyLoader(_UniqueKeys, yaml.CSafeLoader):
        """libyaml's loader with unique keys and _check_shape. libyaml composes nodes recursively in C (a
        document nested 100k deep crashes the process): _check_depth runs first. Without aliases the node
        tree is no larger than the text and no deeper than _check_depth allows: _check_shape only runs with them."""

        aliases = True

        def get_single_node(self) -> yaml.Node | None:
            node: yaml.Node | None = super().get_single_node()
            if node is not None and self.aliases:
                _check_shape(node)
            return node

    def _check_depth(text: str) -> bool:
        """Refuse nesting deeper than _MAX_DEPTH from libyaml's event stream (iterative: no recursion); whether
        the document uses aliases."""
        parser = CParser(text)
        aliases = False
        try:
            depth = 0
            while (event := parser.get_event()) is not None:
                if isinstance(event, yaml.AliasEvent):
                    aliases = True
                elif isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > _MAX_DEPTH + 1:  # the root collection is depth 1
                        raise yaml.parser.ParserError(None, None, f"nested deeper than {_MAX_DEPTH} levels (or "
                                                      "an alias refers to itself)", event.start_mark)  # type: ignore[arg-type]
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
        finally:
            parser.dispose()
        return aliases


def _load_yaml(text: str) -> Any:
    """YAML text to data with the checks of _UniqueKeyLoader, by libyaml where it is there (fast), else by the
    Python loader; a broken file of normal size is reported with the Python loader's message."""
    if not _LIBYAML:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    try:
        loader = _CUniqueKeyLoader(text)  # a CSafeLoader subclass: no arbitrary objects
        try:
            loader.aliases = _check_depth(text)
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError:
        if len(text) > _REPARSE_MAX:
            raise
    return yaml.load(text, Loader=_UniqueKeyLoader)  # raises the same error, said more precisely


def _name_problem(value: str, what: str) -> str | None:
    try:
        _check_name(value, what)
    except ValueError as exc:
        return str(exc)
    return None


def _secret_reference_problems(node: Any, path: str = "") -> list[ConfigProblem]:
    """Every ``*_env`` field, at any depth, must name an environment variable.

    A value that is not a variable name is most likely the secret itself pasted in: it is rejected (so
    ``check-config --output json`` never prints it), and the message never repeats it.
    """
    problems: list[ConfigProblem] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
                if not _ENV_NAME.match(value):
                    problems.append(ConfigProblem(where, "must be the name of an environment variable (letters, "
                                                         "digits, '_'), not the secret itself"))
            else:
                problems += _secret_reference_problems(value, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            problems += _secret_reference_problems(item, f"{path}[{i}]")
    return problems


def _reference_problems(data: dict[Any, Any]) -> list[ConfigProblem]:
    """Names and references, checked on the raw data so they are reported even beside type errors."""
    problems: list[ConfigProblem] = _secret_reference_problems(data)

    def add(path: str, message: str | None) -> None:
        if message is not None:
            problems.append(ConfigProblem(path, message))

    raw_locations = data.get("locations", {})
    location_names: set[str] | None = None  # None: not a mapping (reported by pydantic); skip references
    if isinstance(raw_locations, dict):
        location_names = {n for n in raw_locations if isinstance(n, str)}
        for name in sorted(location_names):
            add(f"locations.{name}", _name_problem(name, "location"))
            inventory = raw_locations[name].get("inventory") if isinstance(raw_locations[name], dict) else None
            dest = inventory.get("location") if isinstance(inventory, dict) else None
            if isinstance(dest, str):  # the S3 location of the inventory report's destination bucket
                target = raw_locations.get(dest)
                if target is None:
                    add(f"locations.{name}.inventory.location", f"unknown location {dest!r}")
                elif not isinstance(target, dict) or target.get("kind") != "s3":
                    add(f"locations.{name}.inventory.location", f"location {dest!r} is not an S3 location")
    raw_assets = data.get("assets", {})
    if not isinstance(raw_assets, dict):
        raw_assets = {}
    for aname, asset in raw_assets.items():
        if not isinstance(aname, str):
            continue  # pydantic reports the key
        add(f"assets.{aname}", _name_problem(aname, "asset"))
        if not isinstance(asset, dict):
            continue
        refs: list[tuple[str, Any]] = [("production", asset.get("production"))]
        copies = asset.get("copies")
        labels: dict[str, int] = {}
        for i, ref in enumerate(copies if isinstance(copies, list) else []):
            refs.append((f"copies[{i}]", ref))
            if not isinstance(ref, dict):
                continue
            cname, where = ref.get("name"), f"assets.{aname}.copies[{i}]"
            label: Any = cname if cname is not None else ref.get("location")
            if not isinstance(label, str):
                continue
            if label == "production":
                add(f"{where}.name" if cname is not None else where,
                    "'production' is reserved for the production copy: name the copy differently")
            elif label in labels:
                add(where, f"copy {label!r} appears twice (also copies[{labels[label]}]): give copies in the "
                           "same location distinct 'name's")
            else:
                labels[label] = i
                if cname is not None:  # a location name is checked under locations
                    add(f"{where}.name", _name_problem(label, "copy"))
        for where, ref in refs:
            target = ref.get("location") if isinstance(ref, dict) else None
            if isinstance(target, str) and location_names is not None and target not in location_names:
                known = ", ".join(sorted(location_names)) or "none defined"
                add(f"assets.{aname}.{where}.location", f"unknown location {target!r} (known: {known})")
        validators = asset.get("validators")
        seen: dict[str, int] = {}
        for i, vraw in enumerate(validators if isinstance(validators, list) else []):
            if not isinstance(vraw, dict):
                continue
            where = f"assets.{aname}.validators[{i}]"
            if "kind" not in vraw:
                add(f"{where}.kind", "required field is missing")
                continue
            vlabel: Any = vraw.get("name") if vraw.get("name") is not None else vraw["kind"]
            if not isinstance(vlabel, str):
                continue
            if vlabel in seen:
                add(f"{where}.name", f"validator {vlabel!r} appears twice (also validators[{seen[vlabel]}]): "
                                     "give each a distinct 'name'")
            else:
                seen[vlabel] = i
                add(f"{where}.name", _name_problem(vlabel, "validator"))
    groups = data.get("consistency_groups")
    for gname, group in (groups.items() if isinstance(groups, dict) else []):
        members = group.get("assets") if isinstance(group, dict) else None
        for i, member in enumerate(members if isinstance(members, list) else []):
            if isinstance(member, str) and member not in raw_assets:
                add(f"consistency_groups.{gname}.assets[{i}]", f"unknown asset {member!r}")
    return problems


def _cross_check_problems(cfg: Config) -> list[ConfigProblem]:
    """Problems a validator (or a consistency group) can only see with the whole (typed) config."""
    return [
        ConfigProblem(f"assets.{aname}.validators[{i}].{p.path}".rstrip("."), p.message)
        for aname, asset in cfg.assets.items()
        for i, v in enumerate(asset.validators)
        for p in v.cross_check(aname, asset, cfg)
    ] + [
        ConfigProblem(f"consistency_groups.{gname}.{p.path}", p.message)
        for gname, group in cfg.consistency_groups.items()
        for p in group_problems(gname, group)
    ] + cluster_problems(cfg) + _alias_problems(cfg)


def _place(cfg: Config, location: str, prefix: str) -> tuple[str, ...]:
    """Where a copy's bytes are: the real directory (symlinks resolved) or the S3 endpoint, bucket and prefix."""
    loc = cfg.locations[location]
    if isinstance(loc, S3LocationConfig):
        return s3_place(loc, prefix)  # endpoint spellings of one service (trailing slash, localhost...) are one
    root = cfg.resolve_path(loc.path)
    return ("filesystem", os.path.realpath(root.joinpath(*prefix.split("/")) if prefix else root))


def _alias_problems(cfg: Config) -> list[ConfigProblem]:
    """A copy that is production itself, or the same place as another copy, is no copy: the 3 in 3-2-1 would
    count one place twice (``./prod/../prod``, a symlink, the production location with the same prefix)."""
    problems = []
    for aname, asset in cfg.assets.items():
        if asset.production.location not in cfg.locations:
            continue
        seen = {_place(cfg, asset.production.location, asset.production.prefix): "production"}
        for i, ref in enumerate(asset.copies):
            if ref.location not in cfg.locations:
                continue
            place = _place(cfg, ref.location, ref.prefix)
            if place in seen:
                what = "production itself" if seen[place] == "production" else f"the same place as copy {seen[place]!r}"
                problems.append(ConfigProblem(f"assets.{aname}.copies[{i}]", f"is {what} ({'/'.join(place[1:])}): "
                                              "a copy must be another place"))
            else:
                seen[place] = ref.label
    return problems



def _web_config_problems(cfg: Config) -> list[ConfigProblem]:
    """``http.web_config_file`` is loaded (certificates included) so that a bad one fails like the config."""
    if cfg.http.web_config_file is None:
        return []
    from drwatch.http.webconfig import for_config

    try:
        for_config(cfg)
    except ConfigError as exc:
        return list(exc.problems)
    return []


# Steps pydantic inserts into error locations that are not part of the file.
_INTERNAL_LOC = frozenset({"function-after", "function-before", "function-wrap", "function-plain", "[key]"})


def _format_loc(loc: tuple[int | str, ...], data: Any) -> str:
    """The path as an operator reads it, walking the raw data: ``assets.x.copies[0].bogus``.

    Mapping keys render as ``.key`` (even numeric ones), list indices as ``[i]``; pydantic's own steps
    (validator functions, discriminator tags, ``[key]``) are dropped.
    """
    out = ""
    node: Any = data
    for item in loc:
        if isinstance(node, dict) and item in node:
            out += f".{item}" if out else str(item)
            node = node[item]
            continue
        if isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            out += f"[{item}]"
            node = node[item]
            continue
        if isinstance(item, str) and (
            item in _INTERNAL_LOC
            or (isinstance(node, dict) and node.get("kind") == item)  # discriminator tag
        ):
            continue
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else item
        node = None
    return out


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_EXPECTED = {
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
}


def _problem_message(err: Any, loc: tuple[int | str, ...]) -> str:
    kind = err["type"]
    value = err.get("input")
    if "[key]" in loc:
        return "keys must be text"
    if kind == "extra_forbidden":
        return "unknown key (not allowed here)"
    if kind == "missing":
        return "required field is missing"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_kind_of(value)}"
    if kind == "union_tag_invalid" or (kind == "literal_error" and loc[-1:] == ("kind",)):
        what, known = ("location", LOCATION_KINDS) if loc[:1] == ("locations",) else ("validator", VALIDATOR_KINDS)
        tag = (err.get("ctx") or {}).get("tag", value)
        return f"unknown {what} kind {tag!r} (known: {', '.join(sorted(known))})"
    if kind == "union_tag_not_found":
        return "required field is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "literal_error" and isinstance(value, str | int | float):
        msg += f", got {value!r}"
    return msg


# Validation errors turned into problems (each walks the raw data for its path); the rest are only counted.
_KEPT_PROBLEMS = 1000


def _problems_from_validation(exc: ValidationError, data: Any) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors(include_url=False)[:_KEPT_PROBLEMS]:
        loc = tuple(err["loc"])
        path = _format_loc(loc, data)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path += ".kind"
        problems.append(ConfigProblem(path, _problem_message(err, loc)))
    return problems


def _salvage(data: dict[Any, Any], exc: ValidationError) -> Config | None:
    """When every error lies inside some assets, the config without them (to cross-check the others)."""
    locs = [tuple(e["loc"]) for e in exc.errors(include_url=False, include_input=False, include_context=False)]
    if any(len(loc) < 2 or loc[0] != "assets" for loc in locs) or not isinstance(data.get("assets"), dict):
        return None
    bad = {loc[1] for loc in locs}
    try:
        return Config.model_validate({**data, "assets": {k: v for k, v in data["assets"].items() if k not in bad}})
    except ValidationError:
        return None


def _unique(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return list(dict.fromkeys(problems))


def _yaml_problem(exc: yaml.YAMLError) -> ConfigProblem:
    """The parser's complaint, located where it blames first: PyYAML's context mark ("while scanning a quoted
    scalar ... line 14": where the construct opened) comes before its problem mark ("found unexpected end of
    stream ... line 32": where it gave up), and both are given."""
    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    problem = getattr(exc, "problem", None) or str(exc)
    mark, context, context_mark = (getattr(exc, n, None) for n in ("problem_mark", "context", "context_mark"))
    if context_mark is not None and (mark is None or (context_mark.line, context_mark.column) !=
                                     (mark.line, mark.column)):
        later = f" at {at(mark)}" if mark is not None else ""
        return ConfigProblem(at(context_mark), f"malformed YAML: {context or 'here'}: {problem}{later}")
    where = at(mark) if mark is not None else ""
    return ConfigProblem(where, f"malformed YAML: {f'{context}: ' if context else ''}{problem}")


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate YAML text; raises ConfigError listing every problem with its path."""
    try:
        data = _load_yaml(text)
    except RecursionError:  # the YAML parser itself recurses per nesting level
        raise ConfigError(source, [ConfigProblem("", f"malformed YAML: nested deeper than {_MAX_DEPTH} levels")]) \
            from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigProblem("", "the top level must be a mapping of keys")])
    problems = [ConfigProblem(k, "unknown key (not allowed here)") for k in _INTERNAL_FIELDS if k in data]
    data = {k: v for k, v in data.items() if k not in _INTERNAL_FIELDS}
    digest = hashlib.sha256(text.encode()).hexdigest()
    omitted = 0
    try:
        cfg: Config | None = Config.model_validate({**data, "source": source, "digest": digest})
    except ValidationError as exc:
        problems += _problems_from_validation(exc, data)
        omitted = max(0, exc.error_count() - _KEPT_PROBLEMS)
        cfg = _salvage(data, exc)
    problems += _reference_problems(data)
    if cfg is not None:
        problems += _cross_check_problems(cfg) + _web_config_problems(cfg)
    if problems:
        raise ConfigError(source, _unique(problems), omitted)
    assert cfg is not None
    return cfg


_MAX_CONFIG_CHARS = 16 << 20  # thousands of assets take a few MB


def load_config(path: str | os.PathLike[str], require_assets: bool = True) -> Config:
    """Read a config file. Raises ConfigError (also for unreadable files, an empty file, and - unless
    ``require_assets`` is False, for commands that only need locations such as ``seal`` - no assets)."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as fh:
            text = fh.read(_MAX_CONFIG_CHARS + 1)
    except OSError as exc:
        raise ConfigError(source, [ConfigProblem("", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [ConfigProblem("", "not UTF-8 text")]) from None
    if len(text) > _MAX_CONFIG_CHARS:  # parsing costs ~25x the file's size in memory: bound it
        raise ConfigError(source, [ConfigProblem("", f"larger than {_MAX_CONFIG_CHARS >> 20} MiB: not a configuration "
                                                     "drwatch reads (a generated file gone wrong?)")])
    if not text.strip():
        raise ConfigError(source, [ConfigProblem("", "the file is empty (a truncated deploy?): drwatch would "
                                                     "watch nothing")])
    cfg = parse_config(text, str(Path(source).resolve()))
    if require_assets and not cfg.assets:
        raise ConfigError(source, [ConfigProblem("assets", "no assets: a configuration file must define at least one "
                                                           "asset (drwatch would watch nothing)")])
    return cfg


def config_or_problem(path: str) -> tuple[Config | None, ConfigError | None]:
    try:
        return load_config(path), None
    except ConfigError as exc:
        return None, exc


def reference_data(cfg: Config) -> dict[str, Any]:
    """The config as data (for ``check-config --output json`` and debugging); secrets are references only."""
    return cfg.model_dump(mode="json")
