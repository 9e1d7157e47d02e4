#!/bin/sh
# Evaluate a model on its published benchmarks and print one table of the results: SED on
# A-847, PC-459, A-150, PC-59, PAS-20, PAS-20b; EOV-Seg on ADE20K-150 panoptic (PQ, SQ, RQ,
# AP, mIoU) and A-847, PC-459, A-150, PC-59, PAS-20 (mIoU). The config picks the model.
#   sh eval.sh [--force] [--compile] configs/convnextB_768.yaml 4 output/ MODEL.WEIGHTS path/to/weights.pth [KEY VALUE ...]
# Each benchmark's results go to OUTPUT_DIR/eval/NAME; the summary to OUTPUT_DIR/eval/summary.{csv,md}.
# Run again, the same command skips the benchmarks whose results are complete for the same
# weights file, config and overrides (--force evaluates them again) and resumes an interrupted
# one after its saved images (TEST.PARTIAL_EVERY). --compile runs the image side through
# torch.compile (TEST.COMPILE True): the first benchmark compiles it, the next ones load it from
# inductor's cache.
# With DATASETS.TEST among the overrides, evaluates those datasets instead (e.g. your own dataset
# folder, DATASETS.TEST "('datasets/custom/shapes/val',)"), results in OUTPUT_DIR.
set -e
SCRIPT=eval.sh
SCRIPT_OPTIONS="[--force] [--compile] "
SCRIPT_OPTIONS_HELP="  --force     evaluate again the benchmarks whose results are complete
  --compile   compiled inference (TEST.COMPILE True: torch.compile, docs/compile.md)
"
FORCE=0
COMPILE=0
while :; do
    case "${1:-}" in
        --force) FORCE=1; shift ;;
        --compile) COMPILE=1; shift ;;
        *) break ;;
    esac
done
. "$(dirname "$0")/tools/launch_common.sh"
shift 3
if [ "$COMPILE" = 1 ]; then set -- "$@" TEST.COMPILE True; fi
for key in "$@"; do
    if [ "$key" = DATASETS.TEST ]; then
        # shellcheck disable=SC2086
        exec "$PYTHON" "$ROOT/train_net.py" --config-file "$CONFIG" $LAUNCH_ARGS --eval-only \
            OUTPUT_DIR "$OUTPUT_DIR" $DEVICE_OPTS "$@"
    fi
done
# shellcheck disable=SC2086
BENCHMARKS=$("$PYTHON" "$ROOT/tools/eval_summary.py" --list "$CONFIG" $DEVICE_OPTS "$@")
COUNT=$(echo "$BENCHMARKS" | grep -c . || true)
INDEX=0
echo "$BENCHMARKS" | while read -r name dataset stamp overrides; do
    [ -n "$name" ] || continue
    INDEX=$((INDEX + 1))
    dir="$OUTPUT_DIR/eval/$name"
    if [ "$FORCE" = 0 ] && [ -f "$dir/results.json" ] && [ "$(cat "$dir/results.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "eval.sh: $name ($INDEX/$COUNT) skipped: $dir/results.json is complete for these weights, config and overrides (--force evaluates it again)"
        continue
    fi
    # The stamp goes first: results.json, written last by a run, is then complete for it.
    rm -f "$dir/results.json"
    mkdir -p "$dir"
    echo "$stamp" > "$dir/results.stamp"
    echo "eval.sh: evaluating $name ($INDEX/$COUNT, $dataset)"
    # shellcheck disable=SC2086
    "$PYTHON" "$ROOT/train_net.py" --config-file "$CONFIG" $LAUNCH_ARGS --eval-only \
        OUTPUT_DIR "$dir" $DEVICE_OPTS \
        DATASETS.TEST "(\"$dataset\",)" $overrides "$@" \
        || echo "eval.sh: $name failed (see $dir/log.txt)" >&2
done
exec "$PYTHON" "$ROOT/tools/eval_summary.py" --summarize "$CONFIG" "$OUTPUT_DIR/eval"
