"""The shipped alerting: rules pass promtool (check and unit tests), every alert is tested in every case, names
only metrics a real drwatch exports, has its runbook section, and routes to the receiver its `route` label
names in the shipped Alertmanager config."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.helpers import REPO, DaemonProcess, free_port, run_cli

PROM_DIR = REPO / "deploy" / "prometheus"
RULES = PROM_DIR / "drwatch.rules.yml"
RULE_TESTS = PROM_DIR / "drwatch.rules.test.yml"
PROMETHEUS_YML = PROM_DIR / "prometheus.yml"
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS = REPO / "docs" / "runbooks.md"

# The shared tests of drwatch.rules.test.yml that assert every alert (the cases of the house style).
CASES = {
    "healthy": "healthy estate",
    "restart": "restart of a healthy estate",
    "never-ran": "never ran",
    "stale": "stale results",
}
SEVERITIES = {"critical", "warning"}
ROUTES = {"data-owners", "platform"}
METRIC_TOKEN = re.compile(r"\bdrwatch_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run scripts/ops-deps.sh"
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, check=False)


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * units[u] for n, u in parts)


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts the rules file (syntax, PromQL, templates)."""
    result = _run(_tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` runs drwatch.rules.test.yml without a failure."""
    result = _run(_tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout


def test_prometheus_example_config_is_valid() -> None:
    """The example prometheus.yml passes `promtool check config` (which also checks the rule file it loads) and
    scrapes job drwatch, the job the rules select."""
    result = _run(_tool("promtool"), "check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    doc = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert doc["rule_files"] == [RULES.name]
    assert [job["job_name"] for job in doc["scrape_configs"]] == ["drwatch"]
    assert doc["alerting"]["alertmanagers"]


def test_every_alert_is_tested_in_every_case() -> None:
    """Each alert is asserted in the healthy, restart, never-ran and stale tests, fires with its exact labels in
    some test, and resolves later in that same test (recovery)."""
    alerts = set(_alerts())
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == [RULES.name]
    tests = {t["name"]: t for t in doc["tests"]}
    for case, name in CASES.items():
        asserted = {a["alertname"] for a in tests[name]["alert_rule_test"]}
        assert asserted == alerts, (case, alerts - asserted)
    for alert in sorted(alerts):
        recovered = False
        for test in doc["tests"]:
            checks = sorted((_duration_seconds(a["eval_time"]), bool(a["exp_alerts"]))
                            for a in test["alert_rule_test"] if a["alertname"] == alert)
            fired = [t for t, firing in checks if firing]
            if fired and any(not firing and t > fired[0] for t, firing in checks):
                recovered = True
        assert recovered, f"{alert}: no test where it fires and then resolves"


def test_alert_labels_annotations_and_runbooks() -> None:
    """Every alert has a severity and a route, a summary, a description and a runbook_url pointing at its own
    section of docs/runbooks.md (anchor = the alert name in lower case)."""
    headings = {m.lower() for m in re.findall(r"^## (\w+)\s*$", RUNBOOKS.read_text(), flags=re.MULTILINE)}
    for name, rule in _alerts().items():
        labels, annotations = rule["labels"], rule["annotations"]
        assert labels["severity"] in SEVERITIES, name
        assert labels["route"] in ROUTES, name
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"docs/runbooks.md#{name.lower()}", name
        assert name.lower() in headings, f"docs/runbooks.md has no section '## {name}'"
        _duration_seconds(rule["for"])


def test_paging_policy() -> None:
    """A bad backup pages the data owners at once; the monitor's own problems go to the platform team; the
    3-2-1-1-0 rules are critical for copies and restore_errors, warnings for media, offsite and immutable."""
    alerts = _alerts()
    expected = {
        "DrwatchBackupBad": ("critical", "data-owners"),
        "DrwatchImmutabilityProbeFailed": ("critical", "data-owners"),
        "DrwatchRPOBreached": ("critical", "data-owners"),
        "DrwatchRTOBreached": ("critical", "data-owners"),
        "DrwatchRTOAtRisk": ("warning", "data-owners"),
        "DrwatchRTONotJudged": ("warning", "platform"),
        "DrwatchRuleCopiesFailing": ("critical", "data-owners"),
        "DrwatchRuleRestoreErrorsFailing": ("critical", "data-owners"),
        "DrwatchRuleMediaFailing": ("warning", "data-owners"),
        "DrwatchRuleOffsiteFailing": ("warning", "data-owners"),
        "DrwatchRuleImmutableFailing": ("warning", "data-owners"),
        "DrwatchRetentionExpiring": ("warning", "data-owners"),
        "DrwatchVectorRecallLow": ("warning", "data-owners"),
        "DrwatchModelGoldenSimilarityLow": ("warning", "data-owners"),
        "DrwatchConsistencyGroupSkewed": ("critical", "data-owners"),
        "DrwatchConsistencyGroupInconsistent": ("critical", "data-owners"),
        "DrwatchDown": ("critical", "platform"),
        "DrwatchAbsent": ("critical", "platform"),
        "DrwatchValidatorError": ("warning", "platform"),
        "DrwatchValidatorNeverSucceeded": ("warning", "platform"),
        "DrwatchValidatorStale": ("warning", "platform"),
        "DrwatchRuleUnknown": ("warning", "platform"),
        "DrwatchConfigReloadFailed": ("warning", "platform"),
        "DrwatchStoreWritesFailing": ("critical", "platform"),
        "DrwatchStoreResultsDropped": ("critical", "platform"),
    }
    assert set(alerts) == set(expected)
    for name, (severity, route) in expected.items():
        assert (alerts[name]["labels"]["severity"], alerts[name]["labels"]["route"]) == (severity, route), name
    assert _duration_seconds(alerts["DrwatchBackupBad"]["for"]) <= 60
    assert _duration_seconds(alerts["DrwatchRuleUnknown"]["for"]) > 6 * 3600 - 1
    assert _duration_seconds(alerts["DrwatchStoreWritesFailing"]["for"]) == 600


def test_amtool_check_config() -> None:
    """`amtool check-config` accepts the example Alertmanager configuration."""
    result = _run(_tool("amtool"), "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_routes_to_its_team() -> None:
    """With its labels (and an asset), each alert reaches exactly the receiver its `route` label names:
    data-owners for a bad backup, platform for a broken monitor (`amtool config routes test`)."""
    amtool = _tool("amtool")
    for name, rule in _alerts().items():
        labels = {"alertname": name, "asset": "db", "job": "drwatch", "instance": "dr1:10099", **rule["labels"]}
        result = _run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}",
                      f"--verify.receivers={rule['labels']['route']}", *(f"{k}={v}" for k, v in labels.items()))
        assert result.returncode == 0, (name, result.stdout, result.stderr)


def _alertname_matcher(matcher: str) -> str:
    """The value of an `alertname="X"` or `alertname=~"X"` matcher."""
    name, _, value = matcher.partition("=")
    assert name == "alertname", matcher
    return value.removeprefix("~").strip('"')


def test_inhibitions_keep_one_page_per_problem() -> None:
    """DrwatchDown/DrwatchAbsent silence the alerts that only say drwatch could not look (stale,
    never-succeeded, error); a bad backup silences the rule alerts it causes, and nothing silences a bad backup."""
    doc = yaml.safe_load(ALERTMANAGER_YML.read_text())
    targets: dict[str, list[str]] = {}
    for rule in doc["inhibit_rules"]:
        [source] = rule["source_matchers"]
        targets[_alertname_matcher(source)] = [_alertname_matcher(m) for m in rule["target_matchers"]]
    alerts = set(_alerts())
    assert set(targets) <= alerts

    def silenced_by(source: str) -> set[str]:
        return {a for a in alerts for pattern in targets.get(source, []) if re.fullmatch(pattern, a)}

    blind = {"DrwatchValidatorStale", "DrwatchValidatorNeverSucceeded", "DrwatchValidatorError"}
    for source in ("DrwatchDown", "DrwatchAbsent"):
        assert blind <= silenced_by(source) <= blind | {"DrwatchRuleUnknown"}, source
    assert "DrwatchRuleCopiesFailing" in silenced_by("DrwatchBackupBad")
    assert all("DrwatchBackupBad" not in silenced_by(source) for source in targets)
    assert doc["route"]["group_by"] == ["alertname", "asset"]


def _referenced_metrics() -> set[str]:
    names: set[str] = set()
    for rule in _rules():
        for token in METRIC_TOKEN.findall(rule["expr"]):
            name = token
            for suffix in HISTOGRAM_SUFFIXES:
                name = name.removesuffix(suffix)
            names.add(name)
    return names


@pytest.fixture(scope="module")
def demo_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a real `drwatch run` on the demo estate, after `drwatch check` stored a result for every
    validator."""
    demo = tmp_path_factory.mktemp("alerts") / "demo"
    assert run_cli("demo", "--dir", str(demo)).returncode == 0
    cfg_path = demo / "drwatch.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    port = free_port()
    data["http"]["listen"] = f"127.0.0.1:{port}"
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert run_cli("check", "--config", str(cfg_path)).returncode == 1  # the demo has failing assets
    daemon = DaemonProcess(cfg_path, port)
    try:
        daemon.start()
        yield daemon.metrics()
    finally:
        if daemon.proc is not None:
            daemon.stop()


def test_rules_use_only_exported_metrics(demo_metrics: str) -> None:
    """Every drwatch_* name in a rule expression (histogram suffixes stripped) is a metric family that a real
    drwatch exports (`# TYPE` lines of its /metrics)."""
    exported: set[str] = set()
    for line in demo_metrics.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            exported.add(name)
            if kind == "counter" and not name.endswith("_total"):
                exported.add(name + "_total")
    referenced = _referenced_metrics()
    assert len(referenced) >= 12, referenced
    assert referenced <= exported, sorted(referenced - exported)
