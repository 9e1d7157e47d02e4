#!/usr/bin/env bash
# Install the project.
#
#   bash tools/install.sh                                   # .venv at the repository root
#   bash tools/install.sh --bundle DIR [--python-version 3.12] [--platform TAG ...] [--full]
#   bash tools/install.sh --from-bundle DIR [--target SITE]  # no network
#
# The first form creates (or refreshes) `.venv` with the pinned stack of requirements.txt,
# detectron2 and this project (editable) with its optional extras (setup.py's extras_require:
# ONNX export, the web demo and its browser test). Re-running is fast: nothing is done while
# requirements.txt, requirements-nodeps.txt, setup.py and this script are unchanged since the
# last successful run.
# --bundle downloads into DIR every wheel the project needs beyond PyTorch, for a Python version
# and platform (default CPython 3.12, manylinux x86-64), with DIR/manifest.json (tools/bundle.py).
# --from-bundle installs those wheels with pip --no-index onto the interpreter $PYTHON (default
# python3), which must already have torch >= 2.4 and the torchvision made for it: into its
# environment with the project editable, or with --target into SITE (then use
# PYTHONPATH=SITE:<repository root>, as the script prints). See INSTALL.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Imports what the project uses, runs torchvision's compiled nms, and names what is missing.
verify() {
    "$1" - <<'PY'
import importlib.util
import torch, torchvision, detectron2, open_clip, panopticapi.evaluation, sed
import cityscapesscripts.preparation.createPanopticImgs
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
print(f"[install] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"detectron2 {detectron2.__version__}, open_clip {open_clip.__version__}, "
      f"CUDA available: {torch.cuda.is_available()}")
needed_by = {"cv2": ("opencv-python-headless", "training's data augmentation, the demo, overlays"),
             "tensorboard": ("tensorboard", "training's TensorBoard log"),
             "matplotlib": ("matplotlib", "the demo's and overlays' pictures")}
for module, (package, use) in needed_by.items():
    if importlib.util.find_spec(module) is None:
        print(f"[install] warning: no module {module!r}: {use} need it "
              f"(pip install {package}, or build the bundle with --full)")
PY
}

# Checks that $1 is the bundle's Python and has a torch/torchvision pair the bundle accepts.
check_target() {
    "$1" - "$2/manifest.json" <<'PY'
import json, sys
manifest = json.load(open(sys.argv[1]))
here = "%d.%d" % sys.version_info[:2]
if here != manifest["python_version"]:
    sys.exit(f"[install] the bundle is for Python {manifest['python_version']}, {sys.executable} is {here}: "
             f"build one with `bash tools/install.sh --bundle DIR --python-version {here}`")
try:
    import torch, torchvision
except ImportError as e:
    sys.exit(f"[install] {sys.executable} has no {e.name}: the bundle installs onto an existing "
             f"torch >= {manifest['torch_min']} and its torchvision (pip install torch torchvision first)")
def minor(version):
    return tuple(int(p) for p in version.split("+")[0].split(".")[:2])
t, v, offset = minor(torch.__version__), minor(torchvision.__version__), manifest["torchvision_minor_offset"]
if t < minor(manifest["torch_min"]) or v != (0, t[1] + offset):
    sys.exit(f"[install] torch {torch.__version__} with torchvision {torchvision.__version__}: the bundle needs "
             f"torch {manifest['torch_min']} or newer and the torchvision made for it "
             f"(torch 2.X with torchvision 0.(X+{offset}))")
print(f"[install] Python {here}, torch {torch.__version__}, torchvision {torchvision.__version__}: accepted")
PY
}

case "${1:-}" in
--bundle)
    [ $# -ge 2 ] || { echo "usage: bash tools/install.sh --bundle DIR [--python-version X.Y] [--platform TAG] [--full]" >&2; exit 2; }
    shift
    bash "$ROOT/tools/install.sh"  # the versions bundled are those of .venv
    exec "$ROOT/.venv/bin/python" "$ROOT/tools/bundle.py" "$@"
    ;;
--from-bundle)
    [ $# -eq 2 ] || { [ $# -eq 4 ] && [ "$3" = "--target" ]; } || {
        echo "usage: bash tools/install.sh --from-bundle DIR [--target SITE]" >&2; exit 2; }
    BUNDLE="$(cd "$2" && pwd)"
    PYTHON="${PYTHON:-python3}"
    check_target "$PYTHON" "$BUNDLE"
    PIP=("$PYTHON" -m pip --disable-pip-version-check install -q --no-index --no-deps)
    # setuptools is in the bundle to build the project's editable install, not to be installed.
    mapfile -t RUNTIME < <(ls "$BUNDLE"/*.whl | grep -v '/setuptools-')
    if [ $# -eq 4 ]; then
        mkdir -p "$4"
        SITE="$(cd "$4" && pwd)"
        "${PIP[@]}" --upgrade --target "$SITE" "${RUNTIME[@]}"
        export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
        verify "$PYTHON"
        echo "[install] use it with: export PYTHONPATH=$SITE:$ROOT"
    else
        "${PIP[@]}" "${RUNTIME[@]}"
        "${PIP[@]}" --find-links "$BUNDLE" -e "$ROOT"
        verify "$PYTHON"
    fi
    exit 0
    ;;
"") ;;
*)
    echo "usage: bash tools/install.sh [--bundle DIR ... | --from-bundle DIR [--target SITE]]" >&2
    exit 2
    ;;
esac

VENV="${SED_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.sed-install-stamp"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-nodeps.txt" "$ROOT/setup.py" "$ROOT/pyproject.toml" \
    "$ROOT/tools/install.sh" \
    | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
    exit 0
fi

echo "[install] setting up $VENV (first run downloads about 5 GB: torch with its CUDA libraries)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

"${PIP[@]}" install -q -r "$ROOT/requirements.txt"

# requirements-nodeps.txt: installed without their dependency metadata (see its comments).
# detectron2 is not on the package index under its own name. Keep one that is already
# installed (e.g. upstream from source); otherwise use `sal-detectron2`, a packaged snapshot of
# upstream. Its wheel is tagged cp310 although its Python code runs on newer Pythons: fetch it
# for 3.10 and install it retagged as pure Python.
DETECTRON2="$(grep '^sal-detectron2==' "$ROOT/requirements-nodeps.txt")"
if ! "$VENV/bin/python" -c "import detectron2" 2>/dev/null; then
    WHEELS="$(mktemp -d)"
    trap 'rm -rf "$WHEELS"' EXIT
    "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$WHEELS" "$DETECTRON2"
    src="$(ls "$WHEELS"/*.whl)"
    dst="${src%-cp310-none-any.whl}-py3-none-any.whl"
    mv "$src" "$dst"
    "${PIP[@]}" install -q --no-deps "$dst"
fi
"${PIP[@]}" install -q --no-deps $(grep -v -e '^#' -e '^sal-detectron2==' "$ROOT/requirements-nodeps.txt")

# The project (editable) with its optional extras (setup.py), so that the suite tests them;
# the core pins as constraints: the extras never change them.
"${PIP[@]}" install -q --no-build-isolation -c "$ROOT/requirements.txt" -e "$ROOT[export,web,web-test]"

verify "$VENV/bin/python"
echo "$WANT" > "$STAMP"
