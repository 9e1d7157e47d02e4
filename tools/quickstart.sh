#!/usr/bin/env bash
# README command 1: set up, generate the embedded default dataset, train SED on it through
# run.sh -> train_net.py (CPU), and print the evaluation table.
#   bash tools/quickstart.sh [OUTPUT_DIR] [KEY VALUE ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
OUTPUT_DIR="${1:-output/synthetic_tiny}"
shift || true
.venv/bin/python datasets/prepare_synthetic.py
sh run.sh configs/synthetic_tiny.yaml 0 "$OUTPUT_DIR" "$@"
