#!/usr/bin/env bash
# Installs Debian's docker-compose, used only to validate docker-compose.yml
# (its `config` check needs no Docker engine).
set -euo pipefail
command -v docker-compose >/dev/null && exit 0
command -v apt-get >/dev/null || { echo "error: docker-compose is required to validate docker-compose.yml (no apt-get here to install it)"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq docker-compose; } >/tmp/kap-install-compose.log 2>&1 \
  || { echo "error: could not install docker-compose with apt-get (network?) - see /tmp/kap-install-compose.log"; exit 1; }
