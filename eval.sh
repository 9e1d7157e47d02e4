#!/bin/sh
# Evaluate a model on its published benchmarks and print one table of the results: SED on
# A-847, PC-459, A-150, PC-59, PAS-20, PAS-20b; EOV-Seg on ADE20K-150 panoptic (PQ, SQ, RQ,
# AP, mIoU) and A-847, PC-459, A-150, PC-59, PAS-20 (mIoU). The config picks the model.
#   sh eval.sh configs/convnextB_768.yaml 4 output/ MODEL.WEIGHTS path/to/weights.pth [KEY VALUE ...]
# Each benchmark's results go to OUTPUT_DIR/eval/NAME; the summary to OUTPUT_DIR/eval/summary.{csv,md}.
# With DATASETS.TEST among the overrides, evaluates those datasets instead (e.g. your own dataset
# folder, DATASETS.TEST "('datasets/custom/shapes/val',)"), results in OUTPUT_DIR.
set -e
SCRIPT=eval.sh
. "$(dirname "$0")/tools/launch_common.sh"
shift 3
for key in "$@"; do
    if [ "$key" = DATASETS.TEST ]; then
        # shellcheck disable=SC2086
        exec "$PYTHON" "$ROOT/train_net.py" --config-file "$CONFIG" $LAUNCH_ARGS --eval-only \
            OUTPUT_DIR "$OUTPUT_DIR" $DEVICE_OPTS "$@"
    fi
done
BENCHMARKS=$("$PYTHON" "$ROOT/tools/eval_summary.py" --list "$CONFIG")
echo "$BENCHMARKS" | while read -r name dataset overrides; do
    [ -n "$name" ] || continue
    echo "eval.sh: evaluating $name ($dataset)"
    # shellcheck disable=SC2086
    "$PYTHON" "$ROOT/train_net.py" --config-file "$CONFIG" $LAUNCH_ARGS --eval-only \
        OUTPUT_DIR "$OUTPUT_DIR/eval/$name" $DEVICE_OPTS \
        DATASETS.TEST "(\"$dataset\",)" $overrides "$@" \
        || echo "eval.sh: $name failed (see $OUTPUT_DIR/eval/$name/log.txt)" >&2
done
exec "$PYTHON" "$ROOT/tools/eval_summary.py" --summarize "$CONFIG" "$OUTPUT_DIR/eval"
