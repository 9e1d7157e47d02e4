#!/usr/bin/env bash
# README command 1: set up, generate the embedded default datasets, train a tiny model on one
# through run.sh -> train_net.py (CPU), and print the evaluation tables.
#   bash tools/quickstart.sh [sed|eov_seg] [OUTPUT_DIR] [KEY VALUE ...]
# sed (default): semantic segmentation, mIoU table; eov_seg: panoptic, PQ/SQ/RQ and mIoU tables.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODEL=sed
case "${1:-}" in sed|eov_seg) MODEL=$1; shift ;; esac
case $MODEL in
    sed) CONFIG=configs/synthetic_tiny.yaml; DEFAULT_OUTPUT=output/synthetic_tiny ;;
    eov_seg) CONFIG=configs/eov_seg/synthetic_tiny.yaml; DEFAULT_OUTPUT=output/eov_seg_synthetic_tiny ;;
esac
bash tools/install.sh
OUTPUT_DIR="${1:-$DEFAULT_OUTPUT}"
shift || true
.venv/bin/python datasets/prepare_synthetic.py
if [ "$MODEL" = sed ]; then
    # SED reads classes from its CLIP cost volume only: pretrain the tiny random CLIP first
    # (text embeddings spread apart, image tower aligned with the names; checked).
    # A SEED override seeds the pretraining too.
    PRETRAIN_SEED=0
    previous=""
    for arg in "$@"; do
        [ "$previous" = SEED ] && PRETRAIN_SEED=$arg
        previous=$arg
    done
    CLIP_WEIGHTS="$OUTPUT_DIR/tiny_clip_pretrained.pt"
    [ -f "$CLIP_WEIGHTS" ] || .venv/bin/python tools/pretrain_tiny_clip.py --config-file "$CONFIG" \
        --output "$CLIP_WEIGHTS" --seed "$PRETRAIN_SEED"
    set -- MODEL.ENC.CLIP_PRETRAINED_WEIGHTS "$CLIP_WEIGHTS" "$@"
fi
sh run.sh "$CONFIG" 0 "$OUTPUT_DIR" "$@"
