#!/usr/bin/env bash
# README command 2: set up (if needed) and run the test suite on the CPU.
#   bash tools/test.sh [PYTEST ARGS ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
exec .venv/bin/python -m pytest tests "$@"
