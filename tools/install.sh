#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment `.venv` at the repository root.
#
#   bash tools/install.sh
#
# Installs the pinned stack of requirements.txt, detectron2 and this project (editable).
# Re-running is fast: nothing is done while requirements.txt, setup.py and this script are
# unchanged since the last successful run. See INSTALL.md for details and alternatives.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SED_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.sed-install-stamp"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/setup.py" "$ROOT/tools/install.sh" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
    exit 0
fi

echo "[install] setting up $VENV (first run downloads about 5 GB: torch with its CUDA libraries)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

"${PIP[@]}" install -q -r "$ROOT/requirements.txt"

# detectron2 is not on the package index under its own name. Keep one that is already
# installed (e.g. upstream from source); otherwise use `sal-detectron2`, a packaged snapshot of
# upstream. Its wheel is tagged cp310 and pins numpy<2, although its Python code runs on newer
# Pythons and numpy 2: fetch it for 3.10, retag it as pure Python, install without its
# dependency metadata (requirements.txt lists the real ones).
if ! "$VENV/bin/python" -c "import detectron2" 2>/dev/null; then
    WHEELS="$(mktemp -d)"
    trap 'rm -rf "$WHEELS"' EXIT
    "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 \
        -d "$WHEELS" "sal-detectron2==0.7.2"
    src="$(ls "$WHEELS"/*.whl)"
    dst="${src%-cp310-none-any.whl}-py3-none-any.whl"
    mv "$src" "$dst"
    "${PIP[@]}" install -q --no-deps "$dst"
fi

# COCO's reference panoptic-quality code (module `panopticapi`, not on the package index) as
# packaged by `panopticapi-lite`. Its metadata pins numpy<2 and pulls plotting and image
# packages that its modules never import (they need numpy and Pillow only): install it alone.
"${PIP[@]}" install -q --no-deps "panopticapi-lite==0.2.0"

# Cityscapes' converters (csCreatePanopticImgs, csCreateTrainIdLabelImgs) for
# datasets/prepare_cityscapes_panoptic.py. They import pyquaternion; the rest of their declared
# dependencies (matplotlib, requests, coloredlogs, appdirs, the obsolete `typing` backport) only
# serve other tools of the package: install both alone.
"${PIP[@]}" install -q --no-deps "cityscapesscripts==2.3.0" "pyquaternion==0.9.9"

"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

"$VENV/bin/python" - <<'PY'
import torch, torchvision, detectron2, open_clip, panopticapi.evaluation, sed
import cityscapesscripts.preparation.createPanopticImgs
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
print(f"[install] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"detectron2 {detectron2.__version__}, open_clip {open_clip.__version__}, "
      f"CUDA available: {torch.cuda.is_available()}")
PY
echo "$WANT" > "$STAMP"
