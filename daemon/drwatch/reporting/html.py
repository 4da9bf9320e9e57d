"""The report as one self-contained HTML file: inline CSS and SVG, no script, no external resource, A4 print.

Every text from outside drwatch (asset and copy names, findings, notes) is passed through
:func:`drwatch.core.textsafe.escape` and HTML-escaped (:func:`t`).
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any

from drwatch.core.durations import format_duration
from drwatch.core.model import worst_first
from drwatch.core.sizes import format_size
from drwatch.core.textsafe import escape

MAX_ROWS = 200  # per table: the rest is in the JSON report (--format json), which lists every result
EVIDENCE_HEX = 16  # hex digits of each result digest embedded in the HTML report
LATEST_DRILLS = 10  # drills listed beside those that failed or took longer than the RTO (all are in the chart)

CSS = """
:root{--ok:#1b7f3b;--bad:#b3261e;--unk:#8a6d00;--line:#d0d4da;--mute:#5f6670}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1100px;padding:16px;color:#1d2127;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #1d2127}
h3{font-size:15px;margin:16px 0 6px}
.meta{color:var(--mute);font-size:12px;word-break:break-all}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f2f4f7}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ok{color:var(--ok);font-weight:600}.failed,.fail,.bad{color:var(--bad);font-weight:600}
.unknown,.error,.timeout,.cancelled{color:var(--unk);font-weight:600}
.why{font-size:12px;color:#3a3f47;word-break:break-word}
.asset{break-inside:avoid-page}
svg{display:block;width:100%;height:auto}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
.wrap{overflow-x:auto}
@media print{body{max-width:none;padding:0;font-size:11px}h2{break-after:avoid}
table{font-size:10px}tr{break-inside:avoid}.asset{break-before:page}a{color:inherit;text-decoration:none}}
@page{size:A4;margin:14mm}
.tamper{border:3px solid var(--bad);background:#fdecea;padding:8px 12px;margin:10px 0}
.tamper strong{color:var(--bad)}.tamper ul{margin:4px 0 0;padding-left:20px;font-size:12px;word-break:break-word}
"""


def t(value: object) -> str:
    """Outside text made safe: terminal/bidi controls escaped (textsafe), then HTML-escaped."""
    return html.escape(escape("" if value is None else value))


def _ts(iso: str | None) -> float:
    return datetime.fromisoformat(iso).timestamp() if iso and not iso.startswith("invalid") else 0.0


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def timeline_svg(intervals: list[dict[str, Any]], since: float, until: float, label: str) -> str:
    """Compliant (green), failing (red) or unknown (amber) over the period: one bar, one rect per interval."""
    span = max(until - since, 1e-9)
    rects = []
    for iv in intervals:
        x0 = (_ts(iv["start"]) - since) / span * 1000
        w = max((_ts(iv["end"]) - _ts(iv["start"])) / span * 1000, 0.5)
        fill = "#1b7f3b" if iv["compliant"] else ("#b3261e" if "fail" in iv["rules"].values() else "#c9a227")
        rects.append(f'<rect x="{x0:.2f}" y="0" width="{w:.2f}" height="18" fill="{fill}"/>')
    return (f'<svg viewBox="0 0 1000 18" preserveAspectRatio="none" role="img" aria-label="{t(label)}" '
            f'height="18">{"".join(rects)}</svg>')


def _restore_bar(restore: float | None, rto: float | None) -> str:
    if restore is None or not rto:
        return ""
    scale = max(restore, rto) * 1.1
    w = restore / scale * 200
    x = rto / scale * 200
    fill = "#1b7f3b" if restore <= rto else "#b3261e"
    return (f'<svg viewBox="0 0 200 12" width="200" height="12" role="img" aria-label="restore time against RTO">'
            f'<rect x="0" y="2" width="{w:.1f}" height="8" fill="{fill}"/>'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="12" stroke="#1d2127" stroke-width="2"/></svg>')


def drills_svg(drills: list[dict[str, Any]], since: float, until: float, rto: float | None) -> str:
    """Every drill's restore time over the period (a dot each; red above the RTO line)."""
    times = [d["restore_seconds"] for d in drills if d["restore_seconds"] is not None]
    if not times:
        return ""
    top = max([*times, rto or 0.0]) * 1.1 or 1.0
    span = max(until - since, 1e-9)
    dots = []
    for d in drills:
        if d["restore_seconds"] is None:
            continue
        x = (_ts(d["finished_at"]) - since) / span * 1000
        y = 80 - d["restore_seconds"] / top * 76
        fill = "#b3261e" if d["within_rto"] is False or d["outcome"] != "ok" else "#1b7f3b"
        dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{fill}"/>')
    line = ""
    if rto:
        y = 80 - rto / top * 76
        line = (f'<line x1="0" x2="1000" y1="{y:.1f}" y2="{y:.1f}" stroke="#1d2127" stroke-dasharray="6 4"/>'
                f'<text x="4" y="{y - 3:.1f}" font-size="10">RTO {_dur(rto)}</text>')
    return (f'<svg viewBox="0 0 1000 84" role="img" aria-label="restore time of every drill against the RTO">'
            f'<rect x="0" y="0" width="1000" height="84" fill="#f7f8fa"/>{line}{"".join(dots)}</svg>')


def _findings_text(findings: list[dict[str, str]], limit: int = 3) -> str:
    parts = [f"{f['severity']} {f['code']}{' [' + f['subject'] + ']' if f['subject'] else ''}: {f['message']}"
             for f in worst_first(findings)[:limit]]
    more = f" (+{len(findings) - limit} more)" if len(findings) > limit else ""
    return t("; ".join(parts) + more)


def _more(n: int) -> str:
    return f'<p class="meta">{n - MAX_ROWS} more rows in the JSON report.</p>' if n > MAX_ROWS else ""


def _asset_section(name: str, a: dict[str, Any], since: float, until: float) -> str:
    out: list[str] = []
    _compliance_part(out, name, a, since, until)
    _drills_part(out, a, since, until)
    _failures_part(out, a)
    _verifications_part(out, a)
    _attestations_part(out, a)
    hashes = ", ".join(f'{t(h["config_hash"] or "(before schema 5)")} ({h["results"]} results, '
                       f'{t(h["first_seen"])} to {t(h["last_seen"])})' for h in a["config_hashes"])
    out.append(f'<p class="meta">Configuration in force: {hashes or "no results in the period"}</p></section>')
    return "".join(out)


def _first_check_note(c: dict[str, Any], since: float, *, brief: bool) -> str:
    """For an asset first checked during the period: its share from then on (before, it was never checked);
    ``brief`` for the summary table's cell, else a clause of the asset's sentence."""
    first = c.get("checked_from")
    if first is None:
        return '<br><span class="meta">never checked</span>' if brief else " (never checked)"
    if _ts(first) <= since:
        return ""
    share = f'{c["share_compliant_checked"]:.1%}'
    if brief:
        return f'<br><span class="meta">{share} since first check</span>'
    return f" (<b>{share}</b> since its first check, {t(first)})"


def _compliance_part(out: list[str], name: str, a: dict[str, Any], since: float, until: float) -> None:
    c = a["compliance"]
    out.extend([f'<section class="asset" id="asset-{t(name)}"><h2>{t(name)}</h2>',
               f'<p>Compliant <b>{c["share_compliant"]:.1%}</b> of the period'
               f'{_first_check_note(c, since, brief=False)}; now '
               f'<span class="{"ok" if c["compliant_at_end"] else "bad"}">'
               f'{"compliant" if c["compliant_at_end"] else "NOT compliant"}</span>. '
               f'RPO {_dur(a["rpo_seconds"])}, RTO {_dur(a["rto_seconds"])}.</p>',
               timeline_svg(c["intervals"], since, until, f"{name}: 3-2-1-1-0 over the period")])
    if c["reason_at_end"]:
        out.append(f'<p class="why">Why now: {t(c["reason_at_end"])}</p>')
    bad = [iv for iv in c["intervals"] if not iv["compliant"]]
    out.append(f"<h3>Non-compliant intervals ({len(bad)})</h3>")
    if bad:
        out.append('<div class="wrap"><table><tr><th>from</th><th>to</th><th>for</th><th>rules</th>'
                   "<th>reason</th></tr>")
        for iv in bad[:MAX_ROWS]:
            rules = " ".join(f'<span class="{s}">{r}:{s}</span>' for r, s in iv["rules"].items() if s != "pass")
            out.append(f'<tr><td>{t(iv["start"])}</td><td>{t(iv["end"])}</td><td class="n">{_dur(iv["seconds"])}</td>'
                       f'<td>{rules}</td><td class="why">{t(iv["reason"])}</td></tr>')
        out.append("</table></div>" + _more(len(bad)))


def _drills_part(out: list[str], a: dict[str, Any], since: float, until: float) -> None:
    all_drills = a["drills"]
    over = [d for d in all_drills if d["within_rto"] is False or d["outcome"] != "ok"]
    latest = [d for d in all_drills[-LATEST_DRILLS:] if d not in over]
    drills = sorted(over + latest, key=lambda d: d["id"])
    out.append(f"<h3>Restore drills ({len(all_drills)}: {len(over)} failed or over the RTO)</h3>")
    out.append(drills_svg(all_drills, since, until, a["rto_seconds"]))
    if drills:
        out.append(f'<p class="meta">Listed: every drill that failed or took longer than the RTO, and the latest '
                   f"{LATEST_DRILLS}; the JSON report lists all.</p>")
        out.append('<div class="wrap"><table><tr><th>finished</th><th>validator</th><th>outcome</th>'
                   "<th>restore time</th><th>vs RTO</th><th>rows</th><th>objects</th><th>bytes</th>"
                   "<th>findings</th></tr>")
        for d in drills[-MAX_ROWS:]:
            rows = "-" if d["rows_restored"] is None else f'{d["rows_restored"]:.0f}'
            within = "" if d["within_rto"] is None else ("within RTO" if d["within_rto"] else "OVER RTO")
            out.append(f'<tr><td>{t(d["finished_at"])}</td><td>{t(d["validator"])}</td>'
                       f'<td class="{t(d["outcome"])}">{t(d["outcome"])}</td>'
                       f'<td class="n drill-restore">{_dur(d["restore_seconds"])}</td>'
                       f'<td>{_restore_bar(d["restore_seconds"], d["rto_seconds"])}'
                       f'<span class="{"ok" if d["within_rto"] else "bad"}">{within}</span></td>'
                       f'<td class="n">{rows}</td><td class="n">{d["objects_proven"]}</td>'
                       f'<td class="n">{format_size(d["bytes_proven"])}</td>'
                       f'<td class="why">{_findings_text(d["findings"])}'
                       "</td></tr>")
        out.append("</table></div>" + _more(len(drills)))


def _failures_part(out: list[str], a: dict[str, Any]) -> None:
    failures = a["failures"]
    out.append(f"<h3>Failures ({len(failures)})</h3>")
    if failures:
        out.append('<div class="wrap"><table><tr><th>validator</th><th>first seen</th><th>proven fixed</th>'
                   "<th>time to fix</th><th>failed runs</th><th>what</th></tr>")
        for f in failures[:MAX_ROWS]:
            fixed = t(f["fixed_at"]) if f["fixed_at"] else '<span class="bad">not fixed</span>'
            out.append(f'<tr><td>{t(f["validator"])}</td><td>{t(f["first_seen"])}</td><td>{fixed}</td>'
                       f'<td class="n">{_dur(f["seconds_to_fix"])}</td><td class="n">{f["failed_runs"]}</td>'
                       f'<td class="why">{t(", ".join(f["codes"]))}: {t(f["message"])}</td></tr>')
        out.append("</table></div>" + _more(len(failures)))


def _verifications_part(out: list[str], a: dict[str, Any]) -> None:
    out.append("<h3>Verification runs by validator</h3>")
    out.append('<div class="wrap"><table><tr><th>validator</th><th>kind</th><th>ok</th><th>failed</th><th>error</th>'
               "<th>timeout</th><th>cancelled</th><th>objects proven</th><th>bytes proven</th></tr>")
    for label, v in a["validators"].items():
        runs = v["runs"]
        out.append(f'<tr><td>{t(label)}</td><td>{t(v["kind"])}</td>'
                   + "".join(f'<td class="n">{runs.get(o, 0)}</td>' for o in ("ok", "failed", "error", "timeout",
                                                                              "cancelled"))
                   + f'<td class="n">{v["objects_proven"]}</td>'
                   + f'<td class="n">{format_size(v["bytes_proven"])}</td></tr>')
    out.append("</table></div>")
    notok = [v for v in a["verifications"] if v["outcome"] != "ok"]
    if notok:
        out.append(f"<h3>Verification runs that did not pass ({len(notok)})</h3>")
        out.append('<div class="wrap"><table><tr><th>finished</th><th>validator</th><th>outcome</th>'
                   "<th>findings</th></tr>")
        for v in notok[-MAX_ROWS:]:
            out.append(f'<tr><td>{t(v["finished_at"])}</td><td>{t(v["validator"])}</td>'
                       f'<td class="{t(v["outcome"])}">{t(v["outcome"])}</td>'
                       f'<td class="why">{_findings_text(v["findings"])}</td></tr>')
        out.append("</table></div>" + _more(len(notok)))


def _attestations_part(out: list[str], a: dict[str, Any]) -> None:
    if a["attestations"]:
        out.append("<h3>Attestations of offline copies</h3><table><tr><th>copy</th><th>attested</th>"
                   "<th>recovery point</th><th>note</th></tr>")
        for att in a["attestations"][-MAX_ROWS:]:
            out.append(f'<tr><td>{t(att["copy"])}</td><td>{t(att["created_at"])}</td>'
                       f'<td>{t(att["recovery_point"] or "-")}</td><td class="why">{t(att["note"])}</td></tr>')
        out.append("</table>")

def chain_banner(chain: dict[str, Any] | None) -> str:
    """What the check of the store's result chain found when the report was made: a banner when it is broken."""
    if chain is None:
        return ""
    if chain["intact"]:
        return (f'<p class="meta">Result chain checked when this report was made: {chain["results"]} stored '
                f'results re-hashed, every link and the head intact ({chain["pruned"]} pruned, linked by their '
                "tombstones).</p>")
    kinds = ", ".join(f"{t(k)}: {n}" for k, n in chain["problem_kinds"].items())
    items = "".join(f'<li>{t(p["kind"])}: store result id {p["id"]}'
                    + (f' (run {t(p["run_id"])})' if p["run_id"] else "") + f': {t(p["detail"])}</li>'
                    for p in chain["problems"][:10])
    more = chain["problems_total"] - min(10, len(chain["problems"]))
    return ('<div class="tamper" role="alert" id="chain-broken"><strong>The store\'s result chain is broken: '
            f'results were edited, deleted or reordered after they were stored.</strong> '
            f'{chain["problems_total"]} problems ({kinds}) found when this report was made; what it shows may '
            "not be what was recorded. <code>drwatch verify-report</code> lists every finding."
            f'<ul>{items}{f"<li>… and {more} more</li>" if more > 0 else ""}</ul></div>')


def render(doc: dict[str, Any]) -> str:
    """The HTML page of a report document (build.build); the evidence block is embedded as inert JSON data."""
    since, until = _ts(doc["period"]["since"]), _ts(doc["period"]["until"])
    s = doc["summary"]
    head = doc["evidence"]["chain_head"]
    rows = []
    for name, a in doc["assets"].items():
        c = a["compliance"]
        over = sum(1 for d in a["drills"] if d["within_rto"] is False)
        open_failures = sum(1 for f in a["failures"] if f["fixed_at"] is None)
        rows.append(
            f'<tr><td><a href="#asset-{t(name)}">{t(name)}</a></td>'
            f'<td class="{"ok" if c["compliant_at_end"] else "bad"}">{"yes" if c["compliant_at_end"] else "no"}</td>'
            f'<td class="n">{c["share_compliant"]:.1%}{_first_check_note(c, since, brief=True)}</td>'
            f'<td style="min-width:160px">{timeline_svg(c["intervals"], since, until, name)}</td>'
            f'<td class="n">{len(a["drills"])}</td><td class="n">{over}</td>'
            f'<td class="n">{len(a["failures"])}</td><td class="n">{open_failures}</td></tr>')
    # Result digests shortened to their first 64 bits (EVIDENCE_HEX): a 100k-result report stays a few MB; a forged
    # result matching 64 bits of a digest is out of reach. The JSON report carries them whole.
    compact = {**doc["evidence"], "results": [[i, d[:EVIDENCE_HEX]] for i, d in doc["evidence"]["results"]]}
    evidence = json.dumps(compact, separators=(",", ":")).replace("</", "<\\/")
    legend = ('<p class="legend"><span><i class="sw" style="background:#1b7f3b"></i>compliant</span>'
              '<span><i class="sw" style="background:#b3261e"></i>a rule fails</span>'
              '<span><i class="sw" style="background:#c9a227"></i>not proven (unknown)</span></p>')
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>drwatch report {t(doc['period']['since'][:10])} to {t(doc['period']['until'][:10])}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>Backup recoverability report</h1>{chain_banner(doc.get('chain'))}"
        f'<p class="meta">Period {t(doc["period"]["since"])} to {t(doc["period"]["until"])} '
        f'({_dur(doc["period"]["seconds"])}); drwatch {t(doc["drwatch_version"])}; configuration '
        f'{t(doc["config_hash"])}; result chain head #{head["id"]} {t(head["digest"])}.</p>'
        f'<p>{s["assets"]} assets, {s["compliant_now"]} compliant now; mean share of time compliant '
        f'{(s["share_compliant_mean"] or 0):.1%}; {s["results"]} results, {s["drills"]} restore drills, '
        f'{s["failures"]} failures ({s["failures_open"]} not fixed).</p>'
        f"<h2>Assets</h2>{legend}"
        '<div class="wrap"><table><tr><th>asset</th><th>compliant now</th><th>share of time compliant</th>'
        "<th>3-2-1-1-0 over the period</th><th>drills</th><th>over RTO</th><th>failures</th><th>not fixed</th></tr>"
        + "".join(rows) + "</table></div>"
        + "".join(_asset_section(n, a, since, until) for n, a in doc["assets"].items())
        + '<h2>Evidence</h2><p class="meta">Every result is chained as stored (each digest covers the previous '
          "one); this report lists the digest of each result it shows and the chain head it was built on. "
          "Check it against the store with <code>drwatch verify-report FILE</code>.</p>"
        + f'<script type="application/json" id="drwatch-evidence">{evidence}</script>'
        + "</body></html>"
    )
