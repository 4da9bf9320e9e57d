"""Names and references (checked on the raw data, so they are reported even beside type errors) and the
cross-checks that need the whole typed configuration (validators, consistency groups, the cluster, copies that
alias one another, the web config file)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from drwatch.core.errors import ConfigError, ConfigProblem
from drwatch.storage.config import S3LocationConfig, s3_place
from drwatch.validators.groups import group_problems

if TYPE_CHECKING:
    from drwatch.config.schema import Config

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

def check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"invalid {what} name {value!r}: use letters, digits, '_', '.', '-' (max 63, no leading symbol)"
        )
    return value


def _name_problem(value: str, what: str) -> str | None:
    try:
        check_name(value, what)
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


class _Problems(list[ConfigProblem]):
    def add(self, path: str, message: str | None) -> None:
        if message is not None:
            self.append(ConfigProblem(path, message))


def reference_problems(data: dict[Any, Any]) -> list[ConfigProblem]:
    """Names and references, checked on the raw data so they are reported even beside type errors."""
    problems = _Problems(_secret_reference_problems(data))
    raw_locations = data.get("locations", {})
    location_names: set[str] | None = None  # None: not a mapping (reported by pydantic); skip references
    if isinstance(raw_locations, dict):
        location_names = {n for n in raw_locations if isinstance(n, str)}
        _location_problems(problems, raw_locations, location_names)
    raw_assets = data.get("assets", {})
    if not isinstance(raw_assets, dict):
        raw_assets = {}
    for aname, asset in raw_assets.items():
        if not isinstance(aname, str):
            continue  # pydantic reports the key
        problems.add(f"assets.{aname}", _name_problem(aname, "asset"))
        if not isinstance(asset, dict):
            continue
        _copy_problems(problems, aname, asset, location_names)
        _validator_name_problems(problems, aname, asset.get("validators"))
    groups = data.get("consistency_groups")
    for gname, group in (groups.items() if isinstance(groups, dict) else []):
        members = group.get("assets") if isinstance(group, dict) else None
        for i, member in enumerate(members if isinstance(members, list) else []):
            if isinstance(member, str) and member not in raw_assets:
                problems.add(f"consistency_groups.{gname}.assets[{i}]", f"unknown asset {member!r}")
    return problems


def _location_problems(problems: _Problems, raw_locations: dict[Any, Any], names: set[str]) -> None:
    for name in sorted(names):
        problems.add(f"locations.{name}", _name_problem(name, "location"))
        inventory = raw_locations[name].get("inventory") if isinstance(raw_locations[name], dict) else None
        dest = inventory.get("location") if isinstance(inventory, dict) else None
        if isinstance(dest, str):  # the S3 location of the inventory report's destination bucket
            target = raw_locations.get(dest)
            if target is None:
                problems.add(f"locations.{name}.inventory.location", f"unknown location {dest!r}")
            elif not isinstance(target, dict) or target.get("kind") != "s3":
                problems.add(f"locations.{name}.inventory.location", f"location {dest!r} is not an S3 location")


def _copy_problems(problems: _Problems, aname: str, asset: dict[Any, Any], location_names: set[str] | None) -> None:
    """The copies' names (distinct, 'production' reserved) and every copy's location (production's too)."""
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
            problems.add(f"{where}.name" if cname is not None else where,
                         "'production' is reserved for the production copy: name the copy differently")
        elif label in labels:
            problems.add(where, f"copy {label!r} appears twice (also copies[{labels[label]}]): give copies in the "
                                "same location distinct 'name's")
        else:
            labels[label] = i
            if cname is not None:  # a location name is checked under locations
                problems.add(f"{where}.name", _name_problem(label, "copy"))
    for where, ref in refs:
        target = ref.get("location") if isinstance(ref, dict) else None
        if isinstance(target, str) and location_names is not None and target not in location_names:
            known = ", ".join(sorted(location_names)) or "none defined"
            problems.add(f"assets.{aname}.{where}.location", f"unknown location {target!r} (known: {known})")


def _validator_name_problems(problems: _Problems, aname: str, validators: Any) -> None:
    seen: dict[str, int] = {}
    for i, vraw in enumerate(validators if isinstance(validators, list) else []):
        if not isinstance(vraw, dict):
            continue
        where = f"assets.{aname}.validators[{i}]"
        if "kind" not in vraw:
            problems.add(f"{where}.kind", "required field is missing")
            continue
        vlabel: Any = vraw.get("name") if vraw.get("name") is not None else vraw["kind"]
        if not isinstance(vlabel, str):
            continue
        if vlabel in seen:
            problems.add(f"{where}.name", f"validator {vlabel!r} appears twice (also validators[{seen[vlabel]}]): "
                                          "give each a distinct 'name'")
        else:
            seen[vlabel] = i
            problems.add(f"{where}.name", _name_problem(vlabel, "validator"))


def cross_check_problems(cfg: Config) -> list[ConfigProblem]:
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


def cluster_problems(cfg: Config) -> list[ConfigProblem]:
    """Cluster mode shares one PostgreSQL store: a SQLite file cannot be shared between hosts."""
    if cfg.cluster.enabled and cfg.store.postgres is None:
        return [ConfigProblem("cluster.enabled",
                              "cluster mode needs a shared PostgreSQL store: set store: {postgres: {dsn_env: ...}} "
                              "(SQLite is for a single node)")]
    return []


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


def web_config_problems(cfg: Config) -> list[ConfigProblem]:
    """``http.web_config_file`` is loaded (certificates included) so that a bad one fails like the config."""
    if cfg.http.web_config_file is None:
        return []
    from drwatch.config.web import for_config

    try:
        for_config(cfg)
    except ConfigError as exc:
        return list(exc.problems)
    return []
