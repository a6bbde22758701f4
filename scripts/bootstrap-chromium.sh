#!/usr/bin/env bash
# Installs Debian's chromium for the drill's browser test (scripts/tests/test_drill_html.py)
# when it is missing. Idempotent; needs root (apt-get) the first time.
#
# Environment:
#   CHROMIUM   use this binary instead (the tests honour it too)
set -euo pipefail

if [[ -n "${CHROMIUM:-}" ]]; then
  [[ -x "$CHROMIUM" ]] || { echo "bootstrap-chromium: CHROMIUM=$CHROMIUM is not executable" >&2; exit 1; }
  exit 0
fi
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "bootstrap-chromium: chromium is missing; install it as root (apt-get install chromium)" \
       "or point CHROMIUM at a Chromium binary" >&2
  exit 1
fi
echo "bootstrap-chromium: installing Debian's chromium (once)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show chromium >/dev/null 2>&1; then
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
