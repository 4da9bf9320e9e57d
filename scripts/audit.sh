#!/usr/bin/env bash
# Dependency audit: every Python package of the environment drwatch runs in (the exact versions installed,
# i.e. the locked set of that deployment) checked against the Python Packaging Advisory Database / OSV
# with pip-audit.
#
#   bash scripts/audit.sh                    # audit the environment of $PYTHON (default: python3)
#   PYTHON=/opt/drwatch/bin/python bash scripts/audit.sh   # audit an installed drwatch (see docs/deployment.md)
#   bash scripts/audit.sh -r requirements.txt               # audit a pinned requirements/lock file instead
#
# Needs network access to the vulnerability service (pypi.org or osv.dev): it is NOT part of the test
# command (scripts/test.sh), which must pass offline. pip-audit runs from a throwaway virtual environment,
# so the audited environment is not changed.
#
# Policy (docs/deployment.md, "Dependency audit"): any known vulnerability fails the audit (exit 1). A finding that does
# not affect drwatch may be accepted for a limited time in scripts/audit-ignore.txt, one advisory id per line
# with a comment saying why and until when (e.g. "PYSEC-2024-1  # only the CLI of X, unused; review 2025-01").
# Exit codes: 0 no known vulnerability; 1 vulnerabilities found; 2 the audit could not run (no network...).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
SERVICE="${AUDIT_SERVICE:-pypi}"  # pypi or osv
IGNORE_FILE="${AUDIT_IGNORE_FILE:-scripts/audit-ignore.txt}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! python3 -m venv "$work/venv" >/dev/null 2>&1 \
    || ! "$work/venv/bin/pip" install -q --disable-pip-version-check "pip-audit>=2.7" >"$work/install.log" 2>&1; then
  echo "audit: cannot install pip-audit (no access to the package index?):" >&2
  tail -5 "$work/install.log" >&2 || true
  exit 2
fi

args=(--progress-spinner off --desc on --vulnerability-service "$SERVICE")
if [ -f "$IGNORE_FILE" ]; then
  while read -r id _; do
    case "$id" in ''|'#'*) continue ;; esac
    args+=(--ignore-vuln "$id")
  done <"$IGNORE_FILE"
fi

if [ "$#" -gt 0 ]; then
  target=("$@")  # e.g. -r requirements.txt
else
  # The exact versions installed where drwatch runs; drwatch itself (a local, editable or path install)
  # is not on PyPI and is left out.
  "$PYTHON" -m pip freeze --all --exclude-editable 2>/dev/null | grep -viE '^(drwatch([= @]|$)|-e )' >"$work/frozen.txt"
  echo "audit: $(wc -l <"$work/frozen.txt") packages from $("$PYTHON" -c 'import sys; print(sys.prefix)')" >&2
  target=(--requirement "$work/frozen.txt" --no-deps --disable-pip)
fi

set +e
"$work/venv/bin/pip-audit" "${args[@]}" "${target[@]}" --format json --output "$work/report.json" 2>"$work/audit.log"
set -e
# pip-audit reports a package it could not look up as "skipped" and still exits 0: that is not a clean
# audit (an unreachable service would pass everything), so skipped packages make the audit fail with 2.
"$work/venv/bin/python" - "$work/report.json" "$IGNORE_FILE" <<'PY' || rc=$?
import json, sys
try:
    deps = json.load(open(sys.argv[1]))["dependencies"]
except (OSError, ValueError, KeyError) as exc:
    print(f"audit: pip-audit produced no report ({exc}); is the vulnerability service reachable?", file=sys.stderr)
    sys.exit(2)
vulnerable = [d for d in deps if d.get("vulns")]
skipped = [d for d in deps if d.get("skip_reason")]
for d in vulnerable:
    for v in d["vulns"]:
        fixed = ", ".join(v.get("fix_versions") or []) or "no fix yet"
        print(f"{d['name']} {d['version']}: {v['id']} (fixed in {fixed}) {v.get('description', '')[:160]}")
print(f"audit: {len(deps)} packages, {len(vulnerable)} vulnerable, {len(skipped)} not audited", file=sys.stderr)
if vulnerable:
    print(f"audit: upgrade them, or accept a finding for a limited time in {sys.argv[2]}", file=sys.stderr)
    sys.exit(1)
if skipped:
    print("audit: could not audit " + ", ".join(f"{d['name']} ({d['skip_reason'][:60]})" for d in skipped[:5])
          + (" ..." if len(skipped) > 5 else "") + "; is the vulnerability service reachable?", file=sys.stderr)
    sys.exit(2)
print("audit: no known vulnerabilities", file=sys.stderr)
PY
exit "${rc:-0}"
