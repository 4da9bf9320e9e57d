"""The status page at ``/`` of the HTTP server: server-rendered HTML, no script, readable on a phone.

It renders the same document as ``/api/v1/status`` (:func:`drwatch.state.report.document`), which is built from
the same snapshot /metrics projects: the compliance table with the "why" of every rule that does not pass,
the consistency groups, the latest restore drills with their restore time against the RTO, and the checks
that did not pass. Every text from outside drwatch is escaped (:func:`drwatch.reporting.html.t`).
"""

from __future__ import annotations

from typing import Any

from drwatch.core.durations import format_duration
from drwatch.core.model import worst_first
from drwatch.reporting.html import t
from drwatch.state.compliance import RULES

CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1100px;padding:12px;color:#1d2127}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 6px;border-bottom:2px solid #1d2127}
nav a{margin-right:14px}
.meta{color:#5f6670;font-size:13px}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border-bottom:1px solid #d0d4da;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f2f4f7}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pass,.ok,.consistent,.yes{color:#1b7f3b;font-weight:600}
.fail,.failed,.no,.inconsistent,.over{color:#b3261e;font-weight:600}
.unknown,.error,.timeout,.cancelled,.stale{color:#8a6d00;font-weight:600}
ul.why{margin:4px 0 0;padding-left:18px;font-size:13px;word-break:break-word}
@media (max-width:640px){body{font-size:14px}
table.cards,table.cards tbody,table.cards tr,table.cards td{display:block;width:100%}
table.cards tr.head{display:none}
table.cards tr{border-bottom:2px solid #d0d4da;padding:4px 0}
table.cards td{border:none;padding:2px 4px;display:flex;justify-content:space-between;gap:12px}
table.cards td[data-label]::before{content:attr(data-label);font-weight:400;color:#5f6670}
table.cards td.name{display:block}}
"""


def _drills(doc: dict[str, Any], rto: dict[str, float | None]) -> list[str]:
    out = []
    for r in doc["results"]:
        seconds = r["figures"].get("restore_seconds")
        if seconds is None:
            continue
        limit = rto.get(r["asset"])
        within = "" if limit is None else ('<span class="ok">within RTO</span>' if seconds <= limit
                                           else '<span class="over">OVER RTO</span>')
        rows = r["figures"].get("rows_restored")
        out.append(f'<tr><td class="name"><b>{t(r["asset"])}</b> {t(r["validator"])}</td>'
                   f'<td data-label="finished">{t(r["finished_at"])}</td>'
                   f'<td data-label="outcome" class="{t(r["outcome"])}">{t(r["outcome"])}</td>'
                   f'<td data-label="restore time" class="n drill-restore">{format_duration(seconds)}</td>'
                   f'<td data-label="RTO" class="n">{"-" if limit is None else format_duration(limit)}</td>'
                   f'<td data-label="">{within}</td>'
                   f'<td data-label="rows" class="n">{"-" if rows is None else f"{rows:.0f}"}</td></tr>')
    return out


def _asset_rows(assets: dict[str, Any]) -> list[str]:
    rows: list[str] = []
    for name, a in assets.items():
        why = [f"<li><b>{r}</b>: {t(a['rules'][r]['state'])}: {t(a['rules'][r]['detail'])}</li>"
               for r in RULES if a["rules"][r]["state"] != "pass"]
        cells = "".join(f'<td data-label="{r}" class="{t(a["rules"][r]["state"])}">{t(a["rules"][r]["state"])}</td>'
                        for r in RULES)
        rows.append(f'<tr class="asset"><td class="name"><b>{t(name)}</b>'
                    + (f'<ul class="why">{"".join(why)}</ul>' if why else "") + f"</td>{cells}"
                    f'<td data-label="compliant" class="{"yes" if a["compliant"] else "no"}">'
                    f'{"yes" if a["compliant"] else "no"}</td></tr>')
    return rows


def _restore_rows(assets: dict[str, Any]) -> list[str]:
    """Per asset with an RTO or a projection: declared, projected (from which copy, and why), measured."""
    rows: list[str] = []
    for name, a in assets.items():
        r = a.get("restore")
        if r is None or (r["rto_seconds"] is None and r["projected_seconds"] is None):
            continue
        drill = r.get("drill") or {}
        verdict = "" if r["within_rto"] is None else ('<span class="ok">within RTO</span>' if r["within_rto"]
                                                      else '<span class="over">OVER RTO</span>')
        why = "".join(f"<li>{t(f['code'])}: {t(f['message'])}</li>" for f in r["findings"][:3])
        measured = drill.get("measured_seconds")
        error = drill.get("error_ratio")
        rows.append(f'<tr class="restore"><td class="name"><b>{t(name)}</b><ul class="why"><li>{t(r["why"])}</li>'
                    f'{why}</ul></td>'
                    f'<td data-label="RTO" class="n">{_dur(r["rto_seconds"])}</td>'
                    f'<td data-label="projected" class="n restore-projected">{_dur(r["projected_seconds"])}</td>'
                    f'<td data-label="from copy">{t(r["copy"] or "-")}</td><td data-label="">{verdict}</td>'
                    f'<td data-label="drill measured" class="n">{_dur(measured)}</td>'
                    f'<td data-label="model error" class="n">{"-" if error is None else f"{error:+.0%}"}</td></tr>')
    return rows


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _group_rows(doc: dict[str, Any]) -> list[str]:
    groups: list[str] = []
    for name, g in doc["consistency_groups"].items():
        skew = g.get("skew_seconds")
        findings = "; ".join(f"{f['code']}: {f['message']}" for f in (g.get("findings") or [])[:5])
        groups.append(f'<tr><td class="name"><b>{t(name)}</b></td>'
                      f'<td data-label="state" class="{t(g["state"])}">{t(g["state"])}</td>'
                      f'<td data-label="skew" class="n">{"-" if skew is None else format_duration(skew)}</td>'
                      f'<td data-label="max skew" class="n">{format_duration(g["max_skew_seconds"])}</td>'
                      f'<td data-label="assets">{t(", ".join(g["assets"]))}</td>'
                      f'<td data-label="findings">{t(findings)}</td></tr>')
    return groups


def _problem_rows(doc: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for r in doc["results"]:
        if r["outcome"] == "ok":
            continue
        findings = "; ".join(f"{f['code']}: {f['message']}" for f in worst_first(r["findings"])[:3])
        problems.append(f'<tr><td class="name"><b>{t(r["asset"])}</b> {t(r["validator"])}</td>'
                        f'<td data-label="outcome" class="{t(r["outcome"])}">{t(r["outcome"])}</td>'
                        f'<td data-label="finished">{t(r["finished_at"])}</td>'
                        f'<td data-label="findings">{t(findings)}</td></tr>')
    return problems


def render(doc: dict[str, Any], version: str, rto: dict[str, float | None]) -> str:
    """The page for a status document; ``rto``: each asset's RTO in seconds (None: none set)."""
    assets = doc["assets"]
    bad = sum(1 for a in assets.values() if not a["compliant"])
    rows = _asset_rows(assets)
    groups = _group_rows(doc)
    problems = _problem_rows(doc)
    drills = _drills(doc, rto)
    restore = _restore_rows(assets)
    head = "".join(f"<th>{r}</th>" for r in RULES)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>drwatch: {len(assets) - bad}/{len(assets)} assets compliant</title><style>{CSS}</style></head><body>"
        f"<h1>drwatch {t(version)}</h1>"
        '<nav><a href="metrics">/metrics</a><a href="api/v1/status">/api/v1/status</a>'
        '<a href="-/healthy">/-/healthy</a><a href="-/ready">/-/ready</a></nav>'
        f'<p class="meta">As of {t(doc["generated_at"])}: {len(assets) - bad} of {len(assets)} assets compliant '
        "(3-2-1-1-0). The same state /metrics exports.</p>"
        '<h2>Compliance</h2><div class="wrap"><table class="cards">'
        f'<tr class="head"><th>asset</th>{head}<th>compliant</th></tr>'
        + "".join(rows) + "</table></div>"
        + ('<h2>Consistency groups</h2><div class="wrap"><table class="cards"><tr class="head"><th>group</th>'
           "<th>state</th><th>skew</th>"
           "<th>max skew</th><th>assets</th><th>findings</th></tr>" + "".join(groups) + "</table></div>"
           if groups else "")
        + ('<h2>Restore time</h2><div class="wrap"><table class="cards"><tr class="head">'
           "<th>asset (why)</th><th>RTO</th><th>projected</th><th>from copy</th><th></th><th>drill measured</th>"
           "<th>model error</th></tr>" + "".join(restore) + "</table></div>" if restore else "")
        + ('<h2>Latest restore drills</h2><div class="wrap"><table class="cards"><tr class="head">'
           "<th>asset / validator</th><th>finished</th><th>outcome</th><th>restore time</th><th>RTO</th><th></th>"
           "<th>rows</th></tr>"
           + "".join(drills) + "</table></div>" if drills else "")
        + ('<h2>Checks that did not pass</h2><div class="wrap"><table class="cards"><tr class="head">'
           "<th>asset / validator</th><th>outcome</th><th>finished</th><th>findings</th></tr>" + "".join(problems)
           + "</table></div>"
           if problems else "")
        + "</body></html>"
    )
