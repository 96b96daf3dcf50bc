#!/usr/bin/env bash
# Installs Debian's chromium, which the browser tests drive headless through Playwright
# (executable_path=/usr/bin/chromium): Playwright's own browser download is never used.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
command -v apt-get >/dev/null || { echo "error: /usr/bin/chromium is required by the browser tests (no apt-get here to install it)"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >/tmp/kap-install-chromium.log 2>&1 \
  || { echo "error: could not install chromium with apt-get (network?) - see /tmp/kap-install-chromium.log"; exit 1; }
