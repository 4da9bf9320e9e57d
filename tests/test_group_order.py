"""Consistency groups are judged after their members, in ``drwatch check`` and in the daemon alike (one rule,
``scheduler.stages`` / ``judges()``), and the text table shows them.

The daemon tests run the demo estate (``drwatch demo --dir``) with schedules that make the group fire before
its members: without the rule its first result would be ``error`` (``member_unproven``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from drwatch.config.model import load_config
from drwatch.engine.scheduler import stages
from tests.support.helpers import DaemonProcess, free_port, read_json_lines, run_cli

MEMBERS = {("vector-index", "replica"), ("model-weights", "replica"), ("model-weights", "model_weights")}
GROUP = ("vector-index", "consistency_group")


def _demo(tmp: Path) -> Path:
    demo = tmp / "demo"
    out = run_cli("demo", "--dir", str(demo))
    assert out.returncode == 0, out.stderr
    return demo / "drwatch.yaml"


def _runs(log: str) -> list[dict[str, Any]]:
    return [e for e in read_json_lines(log) if e.get("event") in ("run_started", "run_finished")]


def _group_finished(log: str) -> bool:
    """Whether the group's validator finished a run (lines still being written are skipped)."""
    for line in log.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "run_finished" and (e.get("asset"), e.get("validator")) == GROUP:
            return True
    return False


def _first_group_run(events: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first run of the group's validator in ``events``: its start and finish lines."""
    start = next(e for e in events if (e["asset"], e["validator"]) == GROUP and e["event"] == "run_started")
    end = next(e for e in events if e["event"] == "run_finished" and e["run_id"] == start["run_id"])
    return start, end


def test_daemon_judges_a_group_after_its_members_at_start_and_after_a_restart(tmp_path: Path) -> None:
    """First start (no stored results) and a restart whose stored member results have gone stale: the group
    fires before its members (jitter 1s against 3s) but runs only once each member's validators have a result
    of this process, so its first result is ``ok``, not ``error`` for a member without a proven point."""
    path = _demo(tmp_path)
    port = free_port()
    cfg = yaml.safe_load(path.read_text())
    cfg["http"]["listen"] = f"127.0.0.1:{port}"
    for asset in cfg["assets"].values():
        for v in asset["validators"]:
            if v["kind"] == "consistency_group":
                v["schedule"] = {"every": "4s", "jitter": "1s"}
            else:  # fresh for 12s: stale by the restart below
                v.update(schedule={"every": "4s", "jitter": "3s"}, max_age="12s")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    for attempt in ("first start", "restart"):
        daemon = DaemonProcess(path, port, log_path=tmp_path / f"{attempt}.log")
        try:
            daemon.start()
            daemon.wait_for(lambda d=daemon: _group_finished(d.log()), timeout=60)
        finally:
            assert daemon.stop() == 0
        events = _runs(daemon.log())
        start, end = _first_group_run(events)
        assert end["outcome"] == "ok", (attempt, end, daemon.log()[-4000:])
        assert end["findings"] == 0, end
        # every member validator finished a run of this process before the group's run started
        for member in MEMBERS:
            finished = [e["timestamp"] for e in events
                        if e["event"] == "run_finished" and (e["asset"], e["validator"]) == member]
            assert finished and min(finished) < start["timestamp"], (attempt, member, events)
        if attempt == "first start":
            time.sleep(12.5)  # the members' stored results go stale (max_age 12s) and overdue (every 4s)


def test_check_orders_groups_after_their_members_with_the_scheduler_rule(tmp_path: Path) -> None:
    """``stages`` (used by ``drwatch check``) puts the group after the selected validators it judges; a group
    selected alone (its members' results read from the store) runs in the only stage."""
    cfg = load_config(_demo(tmp_path))
    selected = list(cfg.iter_validators())
    order = stages(cfg, selected)
    assert len(order) == 2
    # the demo's other judge: model-weights' recovery_dependencies reads terraform-state's terraform_state verdict
    judges = [GROUP, ("model-weights", "recovery_dependencies")]
    assert sorted((a, v.label) for a, v in order[1]) == sorted(judges)
    assert [(a, v.label) for a, v in order[0]] == [(a, v.label) for a, v in selected if (a, v.label) not in judges]
    group_vcfg = next(v for a, v in selected if (a, v.label) == GROUP)
    assert set(group_vcfg.judges(GROUP[0], cfg)) == MEMBERS
    assert stages(cfg, [(GROUP[0], group_vcfg)]) == [[(GROUP[0], group_vcfg)]]


def test_text_table_shows_consistency_groups(tmp_path: Path) -> None:
    """``drwatch check`` and ``drwatch status`` print a consistency-group section (group, state, skew, max skew,
    members); a group that is not consistent says why. Bad runs are in the table, not logged at warning."""
    path = _demo(tmp_path)
    out = run_cli("check", "--config", str(path))
    assert out.returncode == 1, out.stderr
    assert "run_finished" not in out.stderr, out.stderr
    lines = out.stdout.splitlines()
    head = lines.index("Consistency groups:")
    assert lines[head + 1].split() == ["group", "state", "skew", "max", "skew", "members"]
    row = lines[head + 2].split(None, 4)
    assert row[:2] == ["rag", "consistent"] and row[3] == "1d", row
    assert row[4].endswith("vector-index, model-weights"), row

    # The index is re-embedded with another model (its seal's stamp no longer matches): the group is
    # inconsistent and the table says why, in `status` too.
    cfg = yaml.safe_load(path.read_text())
    seal = next((path.parent / "sites/dc-a/prod/vector-index").glob(".drwatch-manifest*"))
    text = seal.read_text()
    assert "embedding_model" in text, text[:500]
    header, _, rest = text.partition("\n")
    doc = json.loads(header)
    doc["extra"]["embedding_model"] = "sha256:" + "0" * 64
    seal.write_text(json.dumps(doc) + "\n" + rest)
    assert cfg["consistency_groups"]["rag"]["embedding_model"]["vectors"] == "vector-index"
    out = run_cli("check", "--config", str(path), "--asset", "vector-index", "--validator", "consistency_group")
    for command in (out, run_cli("status", "--config", str(path))):
        lines = command.stdout.splitlines()
        head = lines.index("Consistency groups:")
        assert lines[head + 2].split()[:2] == ["rag", "inconsistent"], command.stdout
        why = lines[lines.index("Why (consistency groups):") + 1:]
        assert any(w.strip().startswith("rag: critical embedding_model_mismatch [vector-index]") for w in why), \
            command.stdout
