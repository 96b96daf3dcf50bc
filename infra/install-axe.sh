#!/usr/bin/env bash
# axe-core (Deque's accessibility engine) from its npm package, for the console's browser
# tests: they inject axe.min.js into each page and fail on serious or critical findings.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.14.1
DEST=.infra/npm
[ -f "$DEST/node_modules/axe-core/axe.min.js" ] && grep -q "\"version\": \"$VERSION\"" "$DEST/node_modules/axe-core/package.json" && exit 0
command -v npm >/dev/null || { echo "error: npm is required to fetch axe-core for the browser tests"; exit 1; }
mkdir -p "$DEST"
npm install --silent --prefix "$DEST" --no-audit --no-fund --no-save "axe-core@$VERSION" >/tmp/kap-install-axe.log 2>&1 \
  || { echo "error: could not fetch axe-core $VERSION from npm - see /tmp/kap-install-axe.log"; exit 1; }
