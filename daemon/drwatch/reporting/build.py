"""The report document (``drwatch report``): what the store proves about each asset over a period.

The JSON shape is documented in docs/reports.md and versioned by ``version``; fields are only ever added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from drwatch import __version__
from drwatch.cluster.confighash import cached_config_hash
from drwatch.config.model import Config
from drwatch.core import fastjson
from drwatch.core.model import Ack, Attestation, Outcome, Severity
from drwatch.reporting.timeline import Interval, Row, replay
from drwatch.state.compliance import RULES
from drwatch.state.report import iso_time
from drwatch.store.base import ValidatorStats, result_from_row
from drwatch.store.history import HistoryRows

FORMAT = "drwatch-report"
_BY_ID = attrgetter("id")
_SEVERITY = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
VERSION = 1


@dataclass
class _Asset:
    rows: list[Row] = field(default_factory=list)
    before: dict[str, ValidatorStats] = field(default_factory=dict)


def _initial(rows: HistoryRows, names: set[str]) -> dict[str, _Asset]:
    assets: dict[str, _Asset] = {}
    stamps: dict[tuple[str, str], dict[str, float]] = {}
    for asset, validator, outcome, at in rows.stamps:
        stamps.setdefault((asset, validator), {})[outcome] = float(at)
    for raw in rows.before:
        if raw[2] not in names:
            continue
        res = result_from_row(raw[1:12])
        got = stamps.get((res.asset, res.validator), {})
        assets.setdefault(res.asset, _Asset()).before[res.validator] = ValidatorStats(
            res.asset, res.validator, last_run_at=res.finished_at, last_success_at=got.get("ok"),
            last_failure_at=got.get("failed"), last_result=res)
    last: dict[tuple[Any, Any], Row] = {}
    lists: dict[Any, list[Row]] = {}
    for raw in rows.period:
        if raw[2] in names:
            key = (raw[2], raw[3])
            row = last[key] = Row(raw, last.get(key))
            into = lists.get(raw[2])
            if into is None:
                into = lists[raw[2]] = assets.setdefault(str(raw[2]), _Asset()).rows
            into.append(row)
    return assets


def _interval_doc(iv: Interval) -> dict[str, Any]:
    return {"start": iso_time(iv.start), "end": iso_time(iv.end), "seconds": round(iv.seconds, 3),
            "compliant": iv.compliant, "rules": dict(zip(RULES, iv.states, strict=True)), "reason": iv.reason}


def _failures(rows: list[Row]) -> list[dict[str, Any]]:
    """Per validator, each failure episode: the first failed run, and the first ok run after it (proven fixed)."""
    open_: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for row in rows:
        ep = open_.get(row.validator)
        if row.outcome == Outcome.FAILED:
            res = row.result
            if ep is None:
                # What failed: the most severe finding (a copy's content_mismatch, not a warning listed before it)
                first = max(res.findings, key=lambda f: _SEVERITY[f.severity], default=None)
                ep = open_[row.validator] = {
                    "validator": row.validator, "first_seen": iso_time(res.finished_at), "first_run": res.run_id,
                    "fixed_at": None, "fixed_by_run": None, "seconds_to_fix": None, "failed_runs": 0,
                    "codes": [], "message": first.message if first is not None else "",
                    "_t": res.finished_at}
                out.append(ep)
            ep["failed_runs"] += 1
            for f in res.findings:
                if f.code not in ep["codes"] and len(ep["codes"]) < 20:
                    ep["codes"].append(f.code)
        elif row.outcome == Outcome.OK and ep is not None:
            ep.update(fixed_at=iso_time(row.finished_at), fixed_by_run=row.run_id,
                      seconds_to_fix=round(row.finished_at - ep["_t"], 3))
            del open_[row.validator]
    for ep in out:
        del ep["_t"]
    return out


def _run_doc(row: Row, objects: int, nbytes: int) -> dict[str, Any]:
    started, finished = row.started_at, row.finished_at
    findings = row.raw[10]
    return {"id": row.id, "run_id": row.run_id, "digest": row.digest, "validator": row.validator, "kind": row.kind,
            "started_at": iso_time(started), "finished_at": iso_time(finished), "outcome": row.outcome,
            "duration_seconds": round(max(0.0, finished - started), 3), "objects_proven": objects,
            "bytes_proven": nbytes, "findings": [] if findings == "[]" else fastjson.loads(findings),
            "config_hash": row.config_hash}


def _runs(rows: list[Row], rto: float | None, every_run: bool) -> tuple[
        dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], dict[str, list[Any]]]:
    """Per validator its run counts and what was proven; the drills; the verification runs listed; the
    configuration hashes in force (hash -> [first seen, last seen, results])."""
    drills: list[dict[str, Any]] = []
    verifications: list[dict[str, Any]] = []
    validators: dict[str, dict[str, Any]] = {}
    hashes: dict[str, list[Any]] = {}  # hash -> [first, last, results]
    for row in rows:
        objects, nbytes = row.objects, row.nbytes
        v = validators.get(row.validator)
        if v is None:
            v = validators[row.validator] = {"kind": row.kind, "runs": {}, "objects_proven": 0, "bytes_proven": 0,
                                             "rows_restored": 0.0}
        runs = v["runs"]
        runs[row.outcome] = runs.get(row.outcome, 0) + 1
        v["objects_proven"] += objects
        v["bytes_proven"] += nbytes
        if row.drill:
            figures = row.figures
            restore = figures.get("restore_seconds")
            restored = figures.get("rows_restored")
            v["rows_restored"] += restored or 0.0
            drills.append({**_run_doc(row, objects, nbytes), "restore_seconds": restore, "rto_seconds": rto,
                           "within_rto": None if restore is None or rto is None else restore <= rto,
                           "rows_restored": restored})
        elif every_run or row.outcome != Outcome.OK:
            verifications.append(_run_doc(row, objects, nbytes))
        finished = row.finished_at
        h = hashes.get(row.config_hash)
        if h is None:
            hashes[row.config_hash] = [finished, finished, 1]
        else:
            h[0], h[1], h[2] = min(h[0], finished), max(h[1], finished), h[2] + 1
    return validators, drills, verifications, hashes


def _asset_doc(cfg: Config, name: str, data: _Asset, attestations: list[Attestation], acks: list[Ack],
               since: float, until: float, every_run: bool) -> dict[str, Any]:
    acfg = cfg.assets[name]
    rto = acfg.rto.total_seconds() if acfg.rto is not None else None
    rows = sorted(data.rows, key=_BY_ID)  # already in id order as read: one pass
    intervals = replay(cfg, name, data.before, rows, attestations, acks, since, until)
    period = max(until - since, 1e-9)
    compliant_s = sum(iv.seconds for iv in intervals if iv.compliant)
    validators, drills, verifications, hashes = _runs(rows, rto, every_run)
    copies_offline = {c.label for c in acfg.copies if cfg.locations[c.location].offline}
    checked_from = since if data.before else min((r.finished_at for r in rows), default=None)
    return {
        "rpo_seconds": acfg.rpo.total_seconds(),
        "rto_seconds": rto,
        "compliance": {
            "share_compliant": round(compliant_s / period, 6),
            # An asset first checked during the period (a new one, a new install) is not compliant before that
            # (never checked); these say how it fared from its first result on (null: never checked).
            "checked_from": iso_time(checked_from),
            "share_compliant_checked": (None if checked_from is None else
                                        round(min(1.0, compliant_s / max(until - checked_from, 1e-9)), 6)),
            "compliant_seconds": round(compliant_s, 3),
            "compliant_at_end": intervals[-1].compliant,
            "rules_at_end": dict(zip(RULES, intervals[-1].states, strict=True)),
            "reason_at_end": intervals[-1].reason,
            "intervals": [_interval_doc(iv) for iv in intervals],
        },
        "validators": validators,
        "drills": drills,
        "verifications": verifications,
        "every_run_listed": every_run,
        "failures": _failures(rows),
        "attestations": [
            {"copy": a.copy, "note": a.note, "created_at": iso_time(a.created_at),
             "recovery_point": iso_time(a.recovery_point), "in_period": a.created_at >= since}
            for a in attestations if a.asset == name and (a.created_at >= since or a.copy in copies_offline)
        ],
        "config_hashes": [{"config_hash": k, "first_seen": iso_time(f), "last_seen": iso_time(last), "results": n}
                          for k, (f, last, n) in sorted(hashes.items(), key=lambda x: x[1][0])],
        "_evidence": [(row.id, row.digest) for row in rows],
    }


def build(cfg: Config, rows: HistoryRows, since: float, until: float,
          assets: list[str] | None = None, every_run: bool = True) -> dict[str, Any]:
    """The report document for ``assets`` (default: every configured asset) over [since, until]. With
    ``every_run`` false (the HTML report), verification runs that passed are counted, not listed."""
    names = [a for a in cfg.assets if assets is None or a in assets]
    data = _initial(rows, set(names))
    attestations = [Attestation(a, c, note, float(t), None if rp is None else float(rp))
                    for a, c, note, t, rp in rows.attestations]
    acks = [Ack(a, v, by, reason, float(t)) for a, v, by, reason, t in rows.acks]
    asset_docs = {n: _asset_doc(cfg, n, data.get(n) or _Asset(), attestations, acks, since, until, every_run)
                  for n in names}
    evidence = sorted(pair for doc in asset_docs.values() for pair in doc.pop("_evidence"))
    shares = [d["compliance"]["share_compliant"] for d in asset_docs.values()]
    return {
        "format": FORMAT,
        "version": VERSION,
        "drwatch_version": __version__,
        "generated_at": iso_time(until),
        "period": {"since": iso_time(since), "until": iso_time(until), "seconds": round(until - since, 3)},
        "config_hash": cached_config_hash(cfg),
        "summary": {
            "assets": len(asset_docs),
            "compliant_now": sum(1 for d in asset_docs.values() if d["compliance"]["compliant_at_end"]),
            "share_compliant_mean": round(sum(shares) / len(shares), 6) if shares else None,
            "results": len(evidence),
            "drills": sum(len(d["drills"]) for d in asset_docs.values()),
            "failures": sum(len(d["failures"]) for d in asset_docs.values()),
            "failures_open": sum(1 for d in asset_docs.values() for f in d["failures"] if f["fixed_at"] is None),
        },
        "assets": asset_docs,
        "evidence": {"chain_head": {"id": rows.head[0], "digest": rows.head[1]},
                     "results": [[i, d] for i, d in evidence]},
    }
