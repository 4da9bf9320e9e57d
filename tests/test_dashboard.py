"""deploy/grafana: the dashboard conforms to Grafana's published schema (type-checked with TypeScript, no Grafana
server), its structure holds, its provisioning files agree with it, and every query of every panel returns data
from a real Prometheus scraping a real drwatch on the demo estate (with its S3 part on moto).

Needs node/npm (``scripts/ops-ui-deps.sh``; the schema package comes from the npm registry on the first run) and
Prometheus (``scripts/test.sh``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helpers import REPO, DaemonProcess, PrometheusServer, free_port, run_cli
from tests.support.s3servers import MotoServer

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "drwatch.json"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
SCHEMA_DIR = REPO / "tools" / "grafana-schema"
CHECK_SCRIPT = REPO / "scripts" / "grafana-schema-check.sh"
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's built-in interval variables, as a 1 s scrape and a 5 minute dashboard range would set them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m"}
PANEL_TYPES = {"row", "stat", "table", "state-timeline", "timeseries", "bargauge"}
ASSET_WITH_EVERYTHING = "checkpoints"  # the demo's S3 asset: RTO, Object Lock, two validators
# Metrics only restore drills produce (vector index, model inference, database, Redis): the demo estate has none
# of those drills (they need PostgreSQL with pgvector, torch, redis-server), so the panels that show only these
# metrics are checked against real drills in tests/test_dashboard_drills.py instead.
DRILL_METRICS = {"drwatch_vector_recall", "drwatch_vector_recall_threshold", "drwatch_vector_exact_match_ratio",
                 "drwatch_model_golden_similarity", "drwatch_model_golden_similarity_threshold",
                 "drwatch_drill_restore_duration_seconds", "drwatch_drill_rows_restored", "drwatch_redis_keys",
                 "drwatch_redis_sample_bad_ratio"}
# What Grafana puts in for a multi-value selection of four assets: together they have a failed run, a lock, a
# model check, recovery dependencies, S3 replication and a Terraform state.
SOME_ASSETS = "(checkpoints|vector-index|model-weights|terraform-state)"


def _dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels of collapsed rows
    return out


def _targets(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in _panels(doc) for t in p.get("targets", [])]


def _variable(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [v for v in doc["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, name
    return found[0]


def _label_values(variable: dict[str, Any]) -> tuple[str, str]:
    query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
    assert match, query
    return match.group(1), match.group(2)


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(drwatch_[a-z_]+)\b", expr))


def _family(name: str, histograms: set[str]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in histograms:
            return name.removesuffix(suffix)
    return name


def _substitute(expr: str, asset: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    expr = expr.replace("${asset}", asset).replace("$asset", asset)
    assert "$" not in expr, expr
    return expr


# --------------------------------------------------------------------------- schema (TypeScript)


@pytest.fixture(scope="module")
def schema_check() -> subprocess.CompletedProcess[str]:
    """scripts/grafana-schema-check.sh, run once: `npm ci` of the pinned packages (if needed), then tsc."""
    assert shutil.which("node") and shutil.which("npm"), "node/npm are missing: run scripts/ops-ui-deps.sh"
    return subprocess.run(["bash", str(CHECK_SCRIPT)], capture_output=True, text=True, timeout=600, check=False)


def test_dashboard_conforms_to_grafana_schema(schema_check: subprocess.CompletedProcess[str]) -> None:
    """`scripts/grafana-schema-check.sh` exits 0: tsc accepts the dashboard typed as @grafana/schema's Dashboard,
    with no key the schema does not declare, Prometheus targets, and panel options of the panel plugins used."""
    print(schema_check.stdout)
    assert schema_check.returncode == 0, schema_check.stdout + schema_check.stderr
    lock = json.loads((SCHEMA_DIR / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@grafana/schema"]["version"]
    assert f"@grafana/schema {pinned}" in schema_check.stdout
    package = json.loads((SCHEMA_DIR / "package.json").read_text())
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in package["devDependencies"].values()), package


def _first(doc: dict[str, Any], kind: str | None = None, with_mappings: bool = False) -> dict[str, Any]:
    """The first non-row panel (of a panel type, or with value mappings)."""
    return next(p for p in doc["panels"] if p["type"] != "row" and kind in (None, p["type"])
                and (not with_mappings or p["fieldConfig"]["defaults"].get("mappings")))


BROKEN: dict[str, Any] = {
    "panel_key_typo": lambda d: _first(d).update({"datsource": _first(d).pop("datasource")}),
    "target_key_typo": lambda d: _first(d)["targets"][0].update({"legendFromat": "x"}),
    "target_without_expr": lambda d: _first(d)["targets"][0].pop("expr"),
    "gridpos_not_a_number": lambda d: _first(d)["gridPos"].update({"h": "4"}),
    "no_schema_version": lambda d: d.pop("schemaVersion"),
    "stat_option_typo": lambda d: _first(d, "stat")["options"].update({"colourMode": "value"}),
    "stat_option_missing": lambda d: _first(d, "stat")["options"].pop("textMode"),
    "custom_field_config_typo": lambda d: _first(d, "timeseries")["fieldConfig"]["defaults"]["custom"].update(
        {"fillOpacityy": 3}),
    "variable_without_name": lambda d: d["templating"]["list"][1].pop("name"),
    "value_mapping_wrong_shape": lambda d: _first(d, with_mappings=True)["fieldConfig"]["defaults"]["mappings"][
        0].update({"options": [1]}),
}


def test_schema_check_rejects_broken_dashboards(schema_check: subprocess.CompletedProcess[str],
                                                tmp_path: Path) -> None:
    """The same TypeScript check, run on copies of the dashboard each broken in one way (a misspelt key at
    several depths, a missing required field, a value of the wrong kind), fails for every copy: one tsc run, one
    check file per broken copy, each must have an error."""
    assert schema_check.returncode == 0, schema_check.stderr
    work = tmp_path / "tools" / "grafana-schema"
    dashboards = tmp_path / "deploy" / "grafana" / "dashboards"
    work.mkdir(parents=True)
    dashboards.mkdir(parents=True)
    (work / "node_modules").symlink_to(SCHEMA_DIR / "node_modules")
    source = (SCHEMA_DIR / "check-dashboard.ts").read_text()
    assert "dashboards/drwatch.json" in source
    files = []
    for name, breaks in BROKEN.items():
        doc = _dashboard()
        breaks(doc)
        (dashboards / f"{name}.json").write_text(json.dumps(doc))
        (work / f"{name}.ts").write_text(source.replace("dashboards/drwatch.json", f"dashboards/{name}.json"))
        files.append(f"{name}.ts")
    tsconfig = json.loads((SCHEMA_DIR / "tsconfig.json").read_text())
    tsconfig["files"] = files
    (work / "tsconfig.json").write_text(json.dumps(tsconfig))
    done = subprocess.run(["node", "node_modules/typescript/bin/tsc", "--noEmit", "-p", "."], cwd=work,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode != 0
    failing = {line.split("(", 1)[0] for line in done.stdout.splitlines() if ": error TS" in line}
    assert failing == set(files), {"not rejected": set(files) - failing, "output": done.stdout[-3000:]}


# Keys (by their path's tail) whose values are Grafana enums, and the runtime enums of @grafana/schema they take.
ENUM_KEYS = {
    ("color", "mode"): ["FieldColorModeId"],
    ("thresholds", "mode"): ["ThresholdsMode"],
    ("mappings", "type"): ["MappingType"],
    ("cellOptions", "type"): ["TableCellDisplayMode"],
    ("cellOptions", "mode"): ["TableCellBackgroundDisplayMode"],
    ("options", "colorMode"): ["BigValueColorMode"],
    ("options", "graphMode"): ["BigValueGraphMode"],
    ("options", "justifyMode"): ["BigValueJustifyMode"],
    ("options", "textMode"): ["BigValueTextMode"],
    ("options", "percentChangeColorMode"): ["PercentChangeColorMode"],
    ("options", "orientation"): ["VizOrientation"],
    ("options", "displayMode"): ["BarGaugeDisplayMode"],
    ("options", "namePlacement"): ["BarGaugeNamePlacement"],
    ("options", "sizing"): ["BarGaugeSizing"],
    ("options", "valueMode"): ["BarGaugeValueMode"],
    ("options", "showValue"): ["VisibilityMode"],
    ("options", "cellHeight"): ["TableCellHeight"],
    ("legend", "displayMode"): ["LegendDisplayMode"],
    ("tooltip", "mode"): ["TooltipDisplayMode"],
    ("tooltip", "sort"): ["SortOrder"],
    ("custom", "drawStyle"): ["GraphDrawStyle"],
    ("custom", "gradientMode"): ["GraphGradientMode"],
    ("custom", "lineInterpolation"): ["LineInterpolation"],
    ("custom", "showPoints"): ["VisibilityMode"],
    ("custom", "axisPlacement"): ["AxisPlacement"],
    ("custom", "axisColorMode"): ["AxisColorMode"],
    ("stacking", "mode"): ["StackingMode"],
    ("scaleDistribution", "type"): ["ScaleDistribution"],
    ("thresholdsStyle", "mode"): ["GraphThresholdsStyleMode"],
}


def test_enum_values_are_grafana_enums(schema_check: subprocess.CompletedProcess[str]) -> None:
    """Values the TypeScript check can only see as strings/numbers (JSON imports widen literals) are members of
    the pinned @grafana/schema's enums, read from the package at run time; variable types are members of its
    VariableType union."""
    assert schema_check.returncode == 0, schema_check.stderr
    names = sorted({n for enums in ENUM_KEYS.values() for n in enums})
    script = ("const s = require('@grafana/schema'); const out = {};"
              f"for (const n of {json.dumps(names)}) {{ if (!s[n]) throw new Error('no enum ' + n);"
              "out[n] = Object.values(s[n]); } console.log(JSON.stringify(out));")
    enums = json.loads(subprocess.run(["node", "-e", script], cwd=SCHEMA_DIR, capture_output=True, text=True,
                                      timeout=60, check=True).stdout)
    seen: list[tuple[str, str]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for item in node:
                walk(item, path)
        elif len(path) >= 2 and (path[-2], path[-1]) in ENUM_KEYS:
            tail = (path[-2], path[-1])
            allowed = {v for n in ENUM_KEYS[tail] for v in enums[n]}
            assert node in allowed, (path, node, sorted(allowed))
            seen.append(tail)

    doc = _dashboard()
    walk(doc["panels"], ())
    assert len(set(seen)) >= 20, set(seen)  # the walk reaches the keys it is meant to check
    # Override properties carry their field-config path in "id": check their values the same way.
    for panel in _panels(doc):
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                if isinstance(prop.get("value"), dict):
                    walk(prop["value"], (prop["id"].split(".")[-1],))

    declaration = (SCHEMA_DIR / "node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts").read_text()
    match = re.search(r"export type VariableType = \(([^)]*)\)", declaration)
    assert match, "VariableType not found"
    variable_types = set(re.findall(r"'([a-z]+)'", match.group(1)))
    assert {v["type"] for v in doc["templating"]["list"]} <= variable_types


# --------------------------------------------------------------------------- structure and provisioning


def test_dashboard_structure() -> None:
    """Panel ids and titles are unique; every panel and every target uses the datasource variable; every target
    has a PromQL expr and a unique refId in its panel; panels fit the 24-column grid without overlapping; the
    asset variable is filled from label_values and is used with a regex matcher."""
    doc = _dashboard()
    panels = _panels(doc)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), titles
    assert {p["type"] for p in panels} <= PANEL_TYPES
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (panel["title"], grid)
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS_REF, panel["title"]
        assert panel.get("description"), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), (panel["title"], refs)
        for target in panel["targets"]:
            assert target["datasource"] == DS_REF, (panel["title"], target)
            assert isinstance(target.get("expr"), str) and target["expr"].strip(), (panel["title"], target)
            assert "$asset" not in target["expr"].replace('=~"$asset"', ""), (panel["title"], target["expr"])

    datasource = _variable(doc, "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    asset = _variable(doc, "asset")
    assert asset["type"] == "query" and asset["datasource"] == DS_REF
    assert asset["multi"] and asset["includeAll"] and asset["allValue"] == ".*"
    assert _label_values(asset) == ("drwatch_asset_compliant", "asset")


def test_provisioning_files_match_the_dashboard() -> None:
    """The provisioned datasource is a Prometheus one whose uid the dashboard preselects; the dashboard provider
    loads files from a directory (with UI changes not kept)."""
    doc = _dashboard()
    sources = yaml.safe_load((PROVISIONING / "datasources" / "drwatch.yaml").read_text())
    assert sources["apiVersion"] == 1
    [source] = sources["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["url"].startswith("http")
    assert _variable(doc, "datasource")["current"]["value"] == source["uid"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "drwatch.yaml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    assert Path(provider["options"]["path"]).is_absolute()
    assert doc["uid"] and len(doc["uid"]) <= 40


# --------------------------------------------------------------------------- every query against real data


class Stack:
    def __init__(self, daemon: DaemonProcess, prometheus: PrometheusServer) -> None:
        self.daemon = daemon
        self.prometheus = prometheus

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.prometheus.port}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                doc = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{params}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None
        assert doc["status"] == "success", doc
        assert not doc.get("warnings"), doc
        return dict(doc["data"]) if isinstance(doc["data"], dict) else {"values": doc["data"]}

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", {"query": expr})["result"])

    def query_range(self, expr: str, seconds: int = 60) -> list[dict[str, Any]]:
        end = time.time()
        return list(self._get("/api/v1/query_range", {"query": expr, "start": str(end - seconds), "end": str(end),
                                                      "step": "5"})["result"])

    def label_values(self, metric: str, label: str) -> list[str]:
        return list(self._get(f"/api/v1/label/{label}/values", {"match[]": metric})["values"])


@pytest.fixture(scope="module")
def demo_s3() -> Iterator[MotoServer]:
    """A moto S3 server for the demo's S3 part (its own: the demo creates buckets in it)."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def stack(demo_s3: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The demo estate with its S3 part (moto), checked once with `drwatch check` so every validator has a result,
    served by a real `drwatch run` and scraped every second by a real Prometheus for a few scrapes."""
    tmp = tmp_path_factory.mktemp("dashboard")
    env = {"DEMO_AK": demo_s3.access_key, "DEMO_SK": demo_s3.secret_key}
    made = run_cli("demo", "--dir", str(tmp / "demo"), "--s3-endpoint", demo_s3.endpoint_url, "--s3-access-key-env",
                   "DEMO_AK", "--s3-secret-key-env", "DEMO_SK", env=env)
    assert made.returncode == 0, made.stderr
    config = tmp / "demo" / "drwatch.yaml"
    data = yaml.safe_load(config.read_text())
    port = free_port()
    data["http"]["listen"] = f"127.0.0.1:{port}"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    checked = run_cli("check", "--config", str(config), env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr  # the demo has bad backups on purpose
    daemon = DaemonProcess(config, port, env=env)
    prometheus = PrometheusServer(tmp / "prometheus", [f"127.0.0.1:{port}"], scrape_interval="1s")
    try:
        daemon.start()
        prometheus.start()
        prometheus.wait_query("count_over_time(drwatch_build_info[1m]) >= 5", timeout=60)
        yield Stack(daemon, prometheus)
    finally:
        prometheus.stop()
        daemon.stop()


def test_every_metric_in_the_dashboard_is_exported(stack: Stack) -> None:
    """Every drwatch_* name in a panel query or variable is a metric family drwatch exports (`# TYPE` lines of a
    real scrape; histogram series map to their family)."""
    scrape = stack.daemon.metrics()
    families = {line.split()[2]: line.split()[3] for line in scrape.splitlines() if line.startswith("# TYPE ")}
    histograms = {name for name, kind in families.items() if kind == "histogram"}
    doc = _dashboard()
    used = {name for _, t in _targets(doc) for name in _metric_names(t["expr"])}
    used.add(_label_values(_variable(doc, "asset"))[0])
    assert used, "no metric found in the dashboard"
    unknown = {n for n in used if _family(n, histograms) not in families}
    assert not unknown, unknown
    print(f"dashboard uses {len({_family(n, histograms) for n in used})} of {len(families)} exported metric families")


def test_asset_variable_lists_the_demo_assets(stack: Stack) -> None:
    """The asset variable's label_values query, run as Grafana runs it (the label values API), lists every demo
    asset."""
    metric, label = _label_values(_variable(_dashboard(), "asset"))
    values = set(stack.label_values(metric, label))
    assert {"model-weights", "vector-index", "training-data", "feature-store", "terraform-state",
            ASSET_WITH_EVERYTHING} <= values


@pytest.mark.parametrize("asset", [".*", SOME_ASSETS])
def test_every_panel_query_returns_series(stack: Stack, asset: str) -> None:
    """Every target of every panel, with Grafana's variables substituted (all assets, then two), runs on
    Prometheus without error or warning and returns at least one series - instant queries, and range queries for
    targets Grafana runs as ranges."""
    empty = []
    count = 0
    skipped = 0
    for title, target in _targets(_dashboard()):
        expr = _substitute(target["expr"], asset)
        count += 1
        if _metric_names(expr) & DRILL_METRICS:
            stack.query(expr)  # valid PromQL without warnings; its data comes from test_dashboard_drills.py
            skipped += 1
            continue
        if not stack.query(expr):
            empty.append((title, target["refId"], "instant", expr))
        if target.get("range") and not stack.query_range(expr):
            empty.append((title, target["refId"], "range", expr))
    assert not empty, empty
    assert count >= 50 and skipped <= 10, (count, skipped)
    print(f"{count} panel queries returned data for asset=~{asset!r}")


def _by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"][k] for k in labels): float(r["value"][1]) for r in result}


def _expr(title: str, ref: str = "A") -> str:
    for panel_title, target in _targets(_dashboard()):
        if panel_title == title and target["refId"] == ref:
            return str(target["expr"])
    raise AssertionError(f"no target {title}/{ref}")


def test_state_encodings_show_the_demo_as_it_is(stack: Stack) -> None:
    """The encodings behind the matrix and timelines give the demo's known states: the compliance matrix is one
    value per asset and rule (2 pass, 1 unknown, 0 fail), the outcome history one per validator (1 ok, 2 failed,
    3 error), and the stats count the same assets."""
    matrix = stack.query(_substitute(_expr("Compliance matrix"), ".*"))
    assert all(set(r["metric"]) == {"asset", "rule"} for r in matrix), matrix[:3]
    states = _by(matrix, "asset", "rule")
    assert {v for (a, _), v in states.items() if a == "model-weights"} == {2.0}
    assert states[("vector-index", "copies")] == 0.0
    assert states[("terraform-state", "copies")] == 1.0
    assert states[("terraform-state", "offsite")] == 0.0

    outcomes = _by(stack.query(_substitute(_expr("Validator outcome history"), ".*")), "asset", "validator")
    assert outcomes[("model-weights", "replica")] == 1.0
    assert outcomes[("vector-index", "replica")] == 2.0
    assert outcomes[("terraform-state", "replica")] == 3.0

    compliant = float(stack.query(_substitute(_expr("Compliant assets", "A"), ".*"))[0]["value"][1])
    total = float(stack.query(_substitute(_expr("Compliant assets", "B"), ".*"))[0]["value"][1])
    non_compliant = float(stack.query(_substitute(_expr("Non-compliant assets"), ".*"))[0]["value"][1])
    assert total == 6 and compliant >= 1 and compliant + non_compliant == total

    lock = _by(stack.query(_substitute(_expr("Object Lock retention left"), ".*")), "asset", "copy")
    assert set(lock) == {(ASSET_WITH_EVERYTHING, "vault")}
    assert 29 * 86400 < lock[(ASSET_WITH_EVERYTHING, "vault")] <= 30 * 86400  # the demo locks for 30 days

    rpo = _by(stack.query(_substitute(_expr("RPO used (recovery point age ÷ RPO)"), ".*")), "asset")
    assert rpo[("feature-store",)] > 1 > rpo[("model-weights",)]
