"""Documentation stays true: the metrics table equals a real scrape; README commands exist; every validator kind
and every finding code is documented."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from tests.support.helpers import REPO, DaemonProcess, free_port, run_cli

# README.md and every page of docs/; besides the metrics of a single daemon they may name the cluster's own
# families (exported only by a cluster node: drwatch/metrics/cluster.py), the report's `drwatch_version` field and
# the cluster's PostgreSQL schema `drwatch_cluster`.
README_AND_MOVED = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CLUSTER_ONLY = {"drwatch_cluster_nodes", "drwatch_config_hash_info", "drwatch_node_runs_total"}
NOT_METRICS = {"drwatch_version", "drwatch_cluster"}


def _documented(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        m = re.match(r"^\| `(drwatch_[a-z0-9_]+)`", line)
        if m:
            names.add(m.group(1))
    return names


def _exposed(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_metrics_doc_matches_a_real_scrape(tmp_path: Path) -> None:
    """docs/metrics.md lists exactly the metric families a daemon with results exposes."""
    demo = tmp_path / "demo"
    assert run_cli("demo", "--dir", str(demo)).returncode == 0
    cfg_path = demo / "drwatch.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    port = free_port()
    data["http"]["listen"] = f"127.0.0.1:{port}"
    cfg_path.write_text(yaml.safe_dump(data))
    assert run_cli("check", "--config", str(cfg_path)).returncode == 1  # the demo has failing assets
    daemon = DaemonProcess(cfg_path, port)
    daemon.start()
    try:
        exposed = _exposed(daemon.metrics())
    finally:
        daemon.stop()
    documented = _documented(REPO / "docs" / "metrics.md")
    assert documented == exposed, {"undocumented": exposed - documented, "not exported": documented - exposed}
    # The README and the pages its details moved to name only metrics a real daemon exports.
    mentioned: set[str] = set()
    for page in README_AND_MOVED:
        mentioned |= _documented(page)
        mentioned |= set(re.findall(r"`(drwatch_[a-z0-9_]+)`", page.read_text()))
    assert {"drwatch_asset_compliant", "drwatch_drill_restore_duration_seconds"} <= mentioned  # the scan works
    cluster_source = (REPO / "daemon" / "drwatch" / "metrics" / "cluster.py").read_text()
    assert all(f'"{name.removesuffix("_total")}"' in cluster_source for name in CLUSTER_ONLY)
    assert mentioned <= exposed | CLUSTER_ONLY | NOT_METRICS, mentioned - exposed - CLUSTER_ONLY - NOT_METRICS


def test_example_config_is_valid() -> None:
    """config/example.yaml passes check-config."""
    result = run_cli("check-config", str(REPO / "config" / "example.yaml"))
    assert result.returncode == 0, result.stderr


def test_every_validator_kind_is_documented() -> None:
    """docs/development.md step 4: a kind added to PLUGINS has its row in docs/validators.md and is listed in
    the `kind` row of docs/configuration.md (a plugin passes every other test without them)."""
    from drwatch.validators import PLUGINS

    validators = (REPO / "docs" / "validators.md").read_text()
    kind_row = next(line for line in (REPO / "docs" / "configuration.md").read_text().splitlines()
                    if line.startswith("| `kind` | text | required |"))
    for plugin in PLUGINS:
        assert f"| `{plugin.kind}` |" in validators, f"{plugin.kind}: no row in docs/validators.md"
        assert f"`{plugin.kind}`" in kind_row, f"{plugin.kind}: not in configuration.md's `kind` row"


# The constructors that carry a finding code, and the position of the code among their arguments; functions of
# the daemon with a parameter `code` (helpers such as `bad(code, message)`) are found and added.
_CODE_ARG = {"Finding": 1, "DrillFailed": 0, "ValidatorError": 0}
_CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def _finding_codes() -> dict[str, str]:
    """Every literal finding code of the daemon's source: code -> where it is first used (path:line)."""
    sources = sorted((REPO / "daemon" / "drwatch").rglob("*.py"))
    trees = {path: ast.parse(path.read_text(), str(path)) for path in sources}
    positions = {name: {index} for name, index in _CODE_ARG.items()}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                params = [a.arg for a in node.args.posonlyargs + node.args.args]
                params = params[1:] if params[:1] in (["self"], ["cls"]) else params
                if "code" in params:
                    positions.setdefault(node.name, set()).add(params.index("code"))
    codes: dict[str, str] = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            args = [k.value for k in node.keywords if k.arg == "code"]
            args += [node.args[i] for i in positions.get(name, ()) if i < len(node.args)]
            for arg in args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _CODE.match(arg.value):
                    codes.setdefault(arg.value, f"{path.relative_to(REPO)}:{node.lineno}")
    return codes


def test_every_finding_code_is_documented() -> None:
    """docs/findings.md names every code the daemon builds a Finding, DrillFailed or ValidatorError with (codes
    are what operators match on; `sandbox_*` stands for the sandbox codes)."""
    codes = _finding_codes()
    # the scan works (no_snapshot and state_missing are given to helpers: bad(code, ...), critical(code, ...))
    assert {"location_unavailable", "replica_lag_exceeded", "no_snapshot", "state_missing"} <= codes.keys()
    documented = set(re.findall(r"`([a-z][a-z0-9_]*)`", (REPO / "docs" / "findings.md").read_text()))
    missing = {code: where for code, where in codes.items()
               if code not in documented and not code.startswith("sandbox_")}
    assert not missing, missing


def test_commands_the_docs_name_exist() -> None:
    """Every `drwatch COMMAND` quoted in README.md and docs/*.md is a subcommand of the CLI (a renamed or
    invented command, such as `drwatch record-goldens` for `drwatch golden record`, fails)."""
    import argparse

    from drwatch.cli.main import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    named: dict[str, str] = {}
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for command in re.findall(r"`drwatch ([a-z][a-z-]*)", page.read_text()):
            named.setdefault(command, page.name)
    assert {"check", "golden", "verify-report"} <= named.keys()  # the scan works
    assert not {c: page for c, page in named.items() if c not in sub.choices}, sub.choices.keys()


def test_plugin_metric_labels_are_documented() -> None:
    """docs/metrics.md gives each plugin family the labels its plugin declares (the scrape comparison above
    checks names only, and the demo runs few kinds)."""
    from drwatch.validators import PLUGINS

    documented: dict[str, list[str]] = {}
    for line in (REPO / "docs" / "metrics.md").read_text().splitlines():
        m = re.match(r"^\| `(drwatch_[a-z0-9_]+)` \| [a-z]+ \| ([^|]*)\|", line)
        if m:
            documented[m.group(1)] = [label.strip() for label in m.group(2).split(",") if label.strip()]
    declared = {family.name: list(family.labels) for plugin in PLUGINS for family in plugin.families}
    assert "drwatch_redis_keys" in declared  # the scan works
    assert {name: documented.get(name) for name in declared} == declared


def _config_models(model: type[Any], seen: dict[type[Any], None]) -> None:
    """``model`` and every pydantic model its fields can hold (unions, lists, mappings), depth first."""
    from pydantic import BaseModel

    if model in seen:
        return
    seen[model] = None
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                _config_models(tp, seen)
            else:
                stack.extend(typing.get_args(tp))


def test_every_config_key_is_documented() -> None:
    """Every key of the configuration (every field of every model under Config: locations, validators of every
    kind, backends...) is named in docs/configuration.md; `X_file` also as the `X_env` / `_file` shorthand."""
    from drwatch.config.model import _INTERNAL_FIELDS
    from drwatch.config.schema import Config

    models: dict[type[Any], None] = {}
    _config_models(Config, models)
    doc = (REPO / "docs" / "configuration.md").read_text()

    def named(key: str) -> bool:
        if re.search(rf"(?<![a-z0-9_]){re.escape(key)}(?![a-z0-9_])", doc):
            return True
        return key.endswith("_file") and f"`{key.removesuffix('_file')}_env` / `_file`" in doc

    keys = {field.alias or name: model.__name__ for model in models for name, field in model.model_fields.items()}
    assert {"list_concurrency", "production_reread", "signing_key_file", "lock_stale_after"} <= keys.keys()
    missing = {key: where for key, where in keys.items() if key not in _INTERNAL_FIELDS and not named(key)}
    assert not missing, missing
