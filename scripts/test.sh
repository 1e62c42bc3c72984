#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run the whole suite.
set -eu
cd "$(dirname "$0")/.."
if ! [ -x /usr/bin/chromium ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
exec .venv/bin/python -m pytest "$@"
