#!/bin/sh
# Train SED (resumes from OUTPUT_DIR's last checkpoint when there is one).
#   sh run.sh configs/convnextB_768.yaml 4 output/ [KEY VALUE ...]
set -e
SCRIPT=run.sh
. "$(dirname "$0")/tools/launch_common.sh"
shift 3
# shellcheck disable=SC2086
exec "$PYTHON" "$ROOT/train_net.py" --config-file "$CONFIG" $LAUNCH_ARGS --resume \
    OUTPUT_DIR "$OUTPUT_DIR" $DEVICE_OPTS "$@"
