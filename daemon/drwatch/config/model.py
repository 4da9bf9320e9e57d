"""Configuration loading: YAML validated by pydantic v2 (``extra="forbid"``), every problem reported with its path.

The models are :mod:`drwatch.config.schema` (re-exported here: ``Config``, ``AssetConfig``...); the YAML safety
checks are :mod:`drwatch.config.yamlload`, names, references and cross-checks :mod:`drwatch.config.references`.

Top-level keys: ``store``, ``http``, ``limits``, ``locations``, ``assets``, ``consistency_groups``,
``compliance``, ``logging``, ``cluster``, ``metrics``, ``reports``. Secrets are never inline: fields ending in
``_env`` or ``_file`` name where they are (see :mod:`drwatch.core.secrets`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from drwatch.config.problems import KEPT_PROBLEMS, problems_from_validation
from drwatch.config.references import cross_check_problems, reference_problems, web_config_problems
from drwatch.config.schema import AssetConfig, Config, HttpConfig, LimitsConfig, reference_data
from drwatch.config.yamlload import MAX_DEPTH, load_yaml, yaml_problem
from drwatch.core.errors import ConfigError, ConfigProblem

# The models live in drwatch.config.schema; those that callers of the loader use are re-exported.
__all__ = ["AssetConfig", "Config", "HttpConfig", "LimitsConfig", "config_or_problem", "load_config", "parse_config",
           "reference_data"]
# Set by drwatch, never by the file (see parse_config).
_INTERNAL_FIELDS = ("source", "digest")


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


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate YAML text; raises ConfigError listing every problem with its path."""
    try:
        data = load_yaml(text)
    except RecursionError:  # the YAML parser itself recurses per nesting level
        raise ConfigError(source, [ConfigProblem("", f"malformed YAML: nested deeper than {MAX_DEPTH} levels")]) \
            from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [yaml_problem(exc)]) from None
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
        problems += problems_from_validation(exc, data)
        omitted = max(0, exc.error_count() - KEPT_PROBLEMS)
        cfg = _salvage(data, exc)
    problems += reference_problems(data)
    if cfg is not None:
        problems += cross_check_problems(cfg) + web_config_problems(cfg)
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
