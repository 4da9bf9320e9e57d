#!/usr/bin/env bash
# Install the Debian packages the alerting tests (tests/test_alerts.py, tests/test_e2e_paging.py) need:
#   prometheus             (Prometheus 2.42 + promtool: `check rules`, `test rules`, real scrapes)
#   prometheus-alertmanager (Alertmanager 0.25: /usr/bin/prometheus-alertmanager + amtool)
# Idempotent: does nothing when both are installed; runs apt-get update only when something is missing.
# Runs as root (CI) or with sudo available. Installing the packages does not start any service here; the
# tests start their own servers on loopback with temporary storage.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(prometheus prometheus-alertmanager)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "ops-deps: already installed: ${PACKAGES[*]}"
  exit 0
fi

echo "ops-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

for bin in prometheus promtool prometheus-alertmanager amtool; do
  command -v "$bin" >/dev/null || { echo "ops-deps: $bin missing after install" >&2; exit 1; }
done
echo "ops-deps: installed ${missing[*]}"
