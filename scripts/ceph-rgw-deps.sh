#!/usr/bin/env bash
# Install the Debian packages the Ceph RGW S3 test server (tests/support/s3servers.py: CephRGW) needs:
#   radosgw, ceph-mon, ceph-osd (Debian 12: Ceph 16.2 "Pacific").
# Idempotent: does nothing when all packages are already installed; runs apt-get update only
# when something is missing. Runs as root (CI) or with sudo available. Installing the packages
# does not start any Ceph service; the tests start their own throwaway cluster.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(radosgw ceph-mon ceph-osd)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "ceph-rgw-deps: already installed: ${PACKAGES[*]}"
  exit 0
fi

echo "ceph-rgw-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

for bin in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do
  command -v "$bin" >/dev/null || { echo "ceph-rgw-deps: $bin missing after install" >&2; exit 1; }
done
echo "ceph-rgw-deps: installed ${missing[*]}"
