# Shared by run.sh and eval.sh (POSIX sh): argument checks, Python and device selection.
# Expects SCRIPT (the caller's name), optionally SCRIPT_OPTIONS and SCRIPT_OPTIONS_HELP (its
# options before CONFIG, for the usage), and the caller's arguments after those options; sets
# CONFIG, NUM_GPUS, OUTPUT_DIR, PYTHON and LAUNCH_ARGS (train_net.py arguments), and shifts nothing.

usage() {
    cat >&2 <<USAGE
usage: sh $SCRIPT ${SCRIPT_OPTIONS:-}CONFIG NUM_GPUS OUTPUT_DIR [KEY VALUE ...]
${SCRIPT_OPTIONS_HELP:-}  CONFIG      a config file, e.g. configs/convnextB_768.yaml
  NUM_GPUS    GPUs to use on this machine; 0 runs one CPU process (without a GPU,
              N > 0 runs N CPU processes)
  OUTPUT_DIR  folder for checkpoints, logs and results
  KEY VALUE   config overrides, e.g. MODEL.WEIGHTS path/to/model.pth TEST.FAST_INFERENCE True
USAGE
    exit 2
}

[ $# -ge 3 ] || { echo "$SCRIPT: expected at least 3 arguments, got $#" >&2; usage; }
CONFIG=$1
NUM_GPUS=$2
OUTPUT_DIR=$3
[ -f "$CONFIG" ] || { echo "$SCRIPT: config file '$CONFIG' not found" >&2; usage; }
case $NUM_GPUS in
    ''|*[!0-9]*) echo "$SCRIPT: NUM_GPUS must be a whole number, got '$NUM_GPUS'" >&2; usage ;;
esac
[ -n "$OUTPUT_DIR" ] || { echo "$SCRIPT: OUTPUT_DIR is empty" >&2; usage; }
[ $(( ($# - 3) % 2 )) -eq 0 ] || { echo "$SCRIPT: config overrides must come in KEY VALUE pairs" >&2; usage; }

ROOT=$(cd "$(dirname "$0")" && pwd)
if [ -n "${PYTHON:-}" ]; then :
elif [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"
else PYTHON=python3
fi

GPUS_PRESENT=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())") || {
    echo "$SCRIPT: could not import torch with $PYTHON; run: bash tools/install.sh" >&2; exit 1; }
if [ "$NUM_GPUS" -eq 0 ]; then
    LAUNCH_ARGS="--num-gpus 1"
    DEVICE_OPTS="MODEL.DEVICE cpu"
elif [ "$GPUS_PRESENT" -eq 0 ]; then
    # No GPU: NUM_GPUS CPU processes (gloo), e.g. to try the distributed path.
    echo "$SCRIPT: no GPU found, running $NUM_GPUS process(es) on the CPU" >&2
    LAUNCH_ARGS="--num-gpus $NUM_GPUS --dist-url auto"
    DEVICE_OPTS="MODEL.DEVICE cpu"
else
    [ "$NUM_GPUS" -le "$GPUS_PRESENT" ] || {
        echo "$SCRIPT: $NUM_GPUS GPUs asked for, $GPUS_PRESENT present" >&2; exit 2; }
    LAUNCH_ARGS="--num-gpus $NUM_GPUS --dist-url auto"
    DEVICE_OPTS="MODEL.DEVICE cuda"
fi
