#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run the whole suite.
set -eu
cd "$(dirname "$0")/.."
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)                 # the browser tests
python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
command -v g++ >/dev/null || need+=(build-essential)          # llama-cpp-python builds from source
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
exec .venv/bin/python -m pytest "$@"
