#!/usr/bin/env bash
# Type-check deploy/grafana/dashboards/drwatch.json against Grafana's published dashboard schema
# (@grafana/schema, pinned with TypeScript in tools/grafana-schema/package-lock.json). No Grafana server needed.
#
#   bash scripts/grafana-schema-check.sh                 # install (if needed) and check; exit 0 when valid
#   bash scripts/grafana-schema-check.sh --install-only  # only `npm ci` (what scripts/ops-ui-deps.sh calls)
#
# `npm ci --no-audit --no-fund` installs exactly the lock file; it runs again only when the lock file changed
# since the last successful install (a stamp in node_modules), so repeated runs are fast and offline.
set -euo pipefail
cd "$(dirname "$0")/../tools/grafana-schema"

for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "grafana-schema-check: $tool is missing (run scripts/ops-ui-deps.sh)" >&2; exit 69; }
done

stamp=node_modules/.drwatch-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/typescript/bin/tsc ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
[ "${1:-}" = "--install-only" ] && exit 0

schema=$(node -p 'require("@grafana/schema/package.json").version')
node node_modules/typescript/bin/tsc --noEmit -p .
echo "grafana-schema-check: deploy/grafana/dashboards/drwatch.json conforms to @grafana/schema $schema" \
     "(TypeScript $(node -p 'require("typescript/package.json").version'))"
