#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine, then run it.
#   apt: PostgreSQL 15 (real server for store tests), Prometheus (promtool + real scrapes), rclone
#   (benchmark baseline), redis-server + redis-tools (redis_restore drills: redis-server, redis-check-rdb/aof), Ceph mon/osd/radosgw (real S3 with Object Lock); pip: drwatch[dev] (moto[server]).
# Runs as root (CI) or with sudo available. Exits non-zero on any failure, including "no tests ran".
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# python3-venv: the README's quick start (tests/test_quickstart.py runs it on Debian's own python3).
# libfuse2: a throttled FUSE filesystem copy (tests/support/slowfs.py, restore-time tests). iproute2: a private
# network namespace with a hung name server (tests/support/hungdns.py).
APT_PACKAGES=(postgresql prometheus rclone ca-certificates python3-venv redis-server redis-tools libfuse2 iproute2)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's postgresql package may start a cluster as a service; the tests start their own servers.
# Ceph (mon, osd, radosgw): the S3 tests run a throwaway one-host cluster for exact Object Lock semantics.
bash scripts/ceph-rgw-deps.sh
# Prometheus Alertmanager (end-to-end paging test), node/npm + systemd-analyze + strace (dashboard schema
# check, unit checks).
bash scripts/ops-deps.sh
bash scripts/ops-ui-deps.sh

PYTHON="${PYTHON:-python3}"
# Debian's own python3 is externally managed (PEP 668): pip refuses to install into it. There the tests run in
# a virtual environment of the checkout (.venv, reused by the next run); a python that pip may install into
# (a venv, pyenv, the CI image's) is used as it is.
if "$PYTHON" -c 'import sys, sysconfig, pathlib; sys.exit(0 if sys.prefix == sys.base_prefix and pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists() else 1)'; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  PYTHON="$PWD/.venv/bin/python"
  export PATH="$PWD/.venv/bin:$PATH"  # tests start `drwatch`, promtool helpers etc. by name
fi
# torch first, pinned to the CPU build that lies on the machine: sentence-transformers (ml extra) would
# otherwise resolve a multi-GB CUDA build.
"$PYTHON" -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[dev,ml]'

"$PYTHON" -m ruff check daemon tests benchmarks
"$PYTHON" -m mypy
# Test files run in parallel (pytest-xdist, whole files per worker: module fixtures are built once); most tests
# wait on real servers and subprocesses, so three workers keep two cores busy. PYTEST_WORKERS=0 runs serially.
"$PYTHON" -m pytest -n "${PYTEST_WORKERS:-3}" --dist loadfile "$@"
