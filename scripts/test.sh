#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
# Real-tool oracles: mactime (sleuthkit) reads our bodyfiles, b3sum is the benchmark floor.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v mactime >/dev/null; then
  (apt-get install -y -qq sleuthkit >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq sleuthkit >/dev/null 2>&1; }) \
    || echo "note: sleuthkit could not be installed; the mactime test will be skipped" >&2
fi
exec python3 -m pytest -q "$@"
