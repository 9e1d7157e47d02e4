"""The installed stack imports and its compiled ops run; the offline bundle (tools/install.sh
--bundle / --from-bundle) installs without network into an environment that has only torch."""
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import NO_NETWORK, ROOT, SHARED, load_repository_tool

bundle = load_repository_tool("bundle")
PROVIDED_BY_TARGET, installed_closure, marker_environment = (bundle.PROVIDED_BY_TARGET, bundle.installed_closure,
                                                             bundle.marker_environment)


def test_stack_imports_and_nms_runs():
    import detectron2  # noqa: F401
    import open_clip  # noqa: F401
    import cityscapesscripts.preparation.createPanopticImgs  # noqa: F401
    import panopticapi.evaluation  # noqa: F401
    import torchvision

    import sed  # noqa: F401

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


HERE = "%d.%d" % sys.version_info[:2]


def bash(*args, **env):
    return subprocess.run(["bash", "tools/install.sh", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=900)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    result = bash("--bundle", str(out), "--python-version", HERE)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def torch_only_venv(tmp_path_factory):
    """A new virtual environment whose only packages are torch, torchvision and what they
    depend on (linked from the running environment through a .pth file), and pip."""
    root = tmp_path_factory.mktemp("venv")
    venv, links = root / "venv", root / "torch-only"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    links.mkdir()
    for name in installed_closure(PROVIDED_BY_TARGET, marker_environment(HERE, os.uname().machine)):
        dist = importlib.metadata.distribution(name)
        tops = {Path(f).parts[0] for f in dist.files if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if not (links / top).exists():
                (links / top).symlink_to(Path(dist.locate_file(top)))
    (venv / "lib" / f"python{HERE}" / "site-packages" / "torch-only.pth").write_text(f"{links}\n")
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import torch, torchvision; import detectron2"], capture_output=True, text=True)
    assert "No module named 'detectron2'" in probe.stderr  # torch is there, nothing of ours
    return python


@pytest.mark.slow
def test_bundle_has_what_the_project_needs_beyond_torch(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    names = {w["name"] for w in manifest["wheels"]}
    assert {"sal-detectron2", "open-clip-torch", "timm", "fvcore", "iopath", "pycocotools", "panopticapi-lite",
            "omegaconf", "pytest"} <= names
    assert "scipy" in names and not names & {"torch", "torchvision", "numpy", "pillow", "opencv-python-headless",
                                              "tensorboard", "grpcio", "matplotlib"}
    assert all(not n.startswith(("nvidia-", "triton")) for n in names)
    assert manifest["python_version"] == HERE and set(manifest["left_out"]) == {
        "opencv-python-headless", "tensorboard", "matplotlib"}
    files = sorted(p.name for p in bundle.glob("*.whl"))
    assert files == sorted(w["file"] for w in manifest["wheels"])
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in bundle.glob("*.whl")) < 64 * 2**20


@pytest.mark.slow
def test_from_bundle_without_network_gives_a_working_install(bundle, torch_only_venv, tmp_path):
    site = tmp_path / "site"
    result = bash("--from-bundle", str(bundle), "--target", str(site), PYTHON=str(torch_only_venv), **NO_NETWORK)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[install] ok" in result.stdout and f"export PYTHONPATH={site}:{ROOT}" in result.stdout
    assert "no module 'cv2'" in result.stdout and "pip install tensorboard" in result.stdout  # named, with their uses

    result = bash("--from-bundle", str(bundle), PYTHON=str(torch_only_venv), **NO_NETWORK)  # editable, into the venv
    assert result.returncode == 0, result.stderr[-3000:]
    tests = subprocess.run([str(torch_only_venv), "-m", "pytest", "-q", "-rs", "tests/test_official_fixture.py",
                            "tests/test_eov_seg_fixture.py", "tests/test_install.py::test_stack_imports_and_nms_runs"],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert tests.returncode == 0, tests.stdout[-3000:]
    fixtures = (SHARED / "fixtures" / "sed_official_tiny").is_dir() and (SHARED / "fixtures" / "eov_seg_tiny").is_dir()
    assert (" skipped" not in tests.stdout) if fixtures else ("../shared is absent" in tests.stdout)
    assert ("16 passed" if fixtures else "1 passed") in tests.stdout.splitlines()[-1]


def test_from_bundle_refuses_another_python(bundle, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "python_version": "3.99"}))
    result = bash("--from-bundle", str(other), PYTHON=sys.executable, **NO_NETWORK)
    assert result.returncode != 0
    assert "the bundle is for Python 3.99" in result.stderr and f"--python-version {HERE}" in result.stderr
