#!/usr/bin/env bash
# README command 3: set up (if needed) and run the tests on the CPU.
#   bash tools/test.sh [--all] [PYTEST ARGS ...]
# Without --all, -m or test paths: the default tier, every test but the `slow` and `browser`
# ones (tests/README.md). --all runs them all, as CI does. A tier runs on a pytest-xdist worker
# per CPU, each test file on one worker (its module fixtures are built once), the files in the
# order tests/conftest.py collects them (the longest first) rather than xdist's order by test
# count; test paths, or -n / -p given here, run as asked.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
TIER=(-m "not slow and not browser")
# nproc's CPUs, less its rule that OMP_NUM_THREADS sets the count
CPUS="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
PARALLEL=(-n "$CPUS" --dist loadfile --no-loadscope-reorder)
if [ "${1:-}" = --all ]; then
    TIER=()
    shift
fi
for arg in "$@"; do
    case $arg in
        -m|-m*) TIER=() ;;
        tests/*|tests) TIER=(); PARALLEL=() ;;
        -n|-n*|-p) PARALLEL=() ;;
    esac
done
[ "$CPUS" -gt 1 ] || PARALLEL=()
exec .venv/bin/python -m pytest "${TIER[@]}" "${PARALLEL[@]}" "$@"
