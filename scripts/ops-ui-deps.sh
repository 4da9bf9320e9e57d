#!/usr/bin/env bash
# Install what tests/test_dashboard.py and tests/test_systemd_unit.py need on a fresh Debian 12 machine:
#   node + npm      (only when `node` is missing: apt nodejs npm; Debian 12 ships Node 18), then the pinned
#                   @grafana/schema + TypeScript from tools/grafana-schema/package-lock.json (npm ci)
#   systemd-analyze (verify, security --offline, syscall-filter; package systemd)
#   strace          (traces a real daemon against the unit's SystemCallFilter=/MemoryDenyWriteExecute=)
#   prometheus      (a real Prometheus runs every dashboard query; scripts/test.sh installs it too)
#   chromium        (Debian's headless Chromium renders the report and the status page: tests/test_report_render.py,
#                   scripts/report-screenshots.py; fonts-dejavu-core so text renders the same everywhere)
# Idempotent: installs only what is missing (apt-get update only then) and re-runs `npm ci` only when the lock
# file changed. Runs as root (CI) or with sudo available. Installing the packages starts no service here.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
command -v node >/dev/null 2>&1 && ! command -v npm >/dev/null 2>&1 && missing+=(npm)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v strace >/dev/null 2>&1 || missing+=(strace)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)

if [ ${#missing[@]} -gt 0 ]; then
  echo "ops-ui-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for bin in node npm systemd-analyze strace chromium; do
  command -v "$bin" >/dev/null || { echo "ops-ui-deps: $bin missing after install" >&2; exit 1; }
done
echo "ops-ui-deps: node $(node --version), npm $(npm --version), $(systemd-analyze --version | head -n 1)," \
     "$(strace -V | head -n 1)"

bash scripts/grafana-schema-check.sh --install-only
