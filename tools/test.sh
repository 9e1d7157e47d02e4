#!/usr/bin/env bash
# README command 3: set up (if needed) and run the tests on the CPU.
#   bash tools/test.sh [--all] [PYTEST ARGS ...]
# Without --all, -m or test paths: the default tier, every test but the `slow` and `browser`
# ones (tests/README.md). --all runs them all, as CI does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
TIER=(-m "not slow and not browser")
if [ "${1:-}" = --all ]; then
    TIER=()
    shift
fi
for arg in "$@"; do
    case $arg in -m|-m*|tests/*|tests) TIER=() ;; esac
done
exec .venv/bin/python -m pytest "${TIER[@]}" "$@"
