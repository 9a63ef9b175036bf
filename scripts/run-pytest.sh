#!/usr/bin/env bash
# Runs the test suite and refuses to call "no tests collected" (pytest exit 5) a success.
set -uo pipefail
cd "$(dirname "$0")/.."
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.venv/numba-cache}"
export MPLBACKEND=Agg
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests; refusing to report success" >&2
    exit 1
fi
exit "$rc"
