#!/bin/sh
# Evaluate SED on the six published benchmarks and print one table of the results.
#   sh eval.sh configs/convnextB_768.yaml 4 output/ MODEL.WEIGHTS path/to/weights.pth [KEY VALUE ...]
# Each benchmark's results go to OUTPUT_DIR/eval/NAME; the summary to OUTPUT_DIR/eval/summary.{csv,md}.
set -e
SCRIPT=eval.sh
. "$(dirname "$0")/tools/launch_common.sh"
shift 3
"$PYTHON" "$ROOT/tools/eval_summary.py" --list | while read -r name dataset vocabulary; do
    if ! "$PYTHON" "$ROOT/tools/eval_summary.py" --exists "$dataset"; then
        echo "eval.sh: $name skipped: dataset $dataset is not on disk" >&2
        continue
    fi
    echo "eval.sh: evaluating $name ($dataset)"
    # shellcheck disable=SC2086
    "$PYTHON" "$ROOT/train_net.py" --config-file "$CONFIG" $LAUNCH_ARGS --eval-only \
        OUTPUT_DIR "$OUTPUT_DIR/eval/$name" $DEVICE_OPTS \
        DATASETS.TEST "(\"$dataset\",)" \
        MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON "$ROOT/datasets/$vocabulary" \
        MODEL.SEM_SEG_HEAD.POOLING_SIZES "[1,1]" "$@" \
        || echo "eval.sh: $name failed (see $OUTPUT_DIR/eval/$name/log.txt)" >&2
done
exec "$PYTHON" "$ROOT/tools/eval_summary.py" --summarize "$OUTPUT_DIR/eval"
