#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run the whole suite.
set -eu
cd "$(dirname "$0")/.."
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)                 # the browser tests
python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
command -v g++ >/dev/null || need+=(build-essential)          # llama-cpp-python builds from source
command -v npm >/dev/null || need+=(npm)                      # tsc and esbuild check the front end (js/)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v npm >/dev/null; then
  echo "scripts/test.sh: npm not found. Install Node.js and npm (Debian: apt-get install nodejs npm), then rerun." >&2
  exit 1
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
npm ci --no-audit --no-fund --loglevel=error          # tsc, esbuild and the front end's libraries, pinned in package-lock.json
exec .venv/bin/python -m pytest "$@"
