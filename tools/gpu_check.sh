#!/usr/bin/env bash
# Check and measure a GPU machine in one go (tools/gpu_check.py: the CUDA test tier, then both
# models' benchmarks, each bounded in time, within about 9 minutes on an H100/H200-class GPU).
#
#   bash tools/gpu_check.sh [--dry-run] [--bundle DIR] OUT_DIR [gpu_check.py options]
#
# Python: $PYTHON if set, else .venv/bin/python if there, else python3. If that interpreter
# lacks the project's dependencies, they are installed from the offline bundle DIR (default
# .bundle/, made elsewhere with `bash tools/install.sh --bundle .bundle`) into .offline-site/,
# without network. --dry-run runs everything on the CPU with the tiny configs and sizes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUNDLE="$ROOT/.bundle"
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE="$2"; shift 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
[ ${#ARGS[@]} -ge 1 ] || { echo "usage: bash tools/gpu_check.sh [--dry-run] [--bundle DIR] OUT_DIR" >&2; exit 2; }

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
SITE="$ROOT/.offline-site"
[ -d "$SITE" ] && export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import detectron2, open_clip, fvcore, pycocotools, panopticapi, pytest, sed" 2>/dev/null; then
    [ -f "$BUNDLE/manifest.json" ] || {
        echo "gpu_check: $PYTHON lacks the project's dependencies and there is no bundle at $BUNDLE;" \
             "build one where pip has the index: bash tools/install.sh --bundle $BUNDLE" >&2; exit 1; }
    echo "[gpu_check] installing from $BUNDLE into $SITE (no network)"
    bash "$ROOT/tools/install.sh" --from-bundle "$BUNDLE" --target "$SITE"
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" "$ROOT/tools/gpu_check.py" "${ARGS[@]}"
