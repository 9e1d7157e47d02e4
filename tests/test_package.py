"""The project as a package: its data files come from the installed package (sed/resources.py),
config file values resolve outside the repository, and a wheel, installed non-editable, runs
the predictor from a folder that is not the repository."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import NO_NETWORK, ROOT, TINY_TEXT
from sed.clip.builder import resolve_model_name
from sed.resources import (package_root, packaged_references, packaged_vocabularies, reference_path,
                           resolve_data_file, vocabulary_path)
from sed.vocabulary import load_vocabulary

# Pinned in requirements.txt but not needed at run time: the build backend, tools and tests.
NOT_RUNTIME = {"setuptools", "psutil", "pytest", "pytest-timeout", "pytest-xdist", "execnet"}
# The data files setup.py's package_data must put in the wheel, as globs below sed/.
PACKAGE_DATA = ("vocabularies/**/*.json", "reference/*", "model_configs/*.json")
CONSOLE_SCRIPTS = {"sed-demo": "sed.tools.demo:main", "sed-web-demo": "sed.tools.web_demo:main",
                   "sed-export": "sed.tools.export:main", "sed-benchmark": "sed.tools.benchmark:main"}
# Run in a fresh interpreter from a folder outside the repository: where `sed` and its data come
# from, then the predictor of the config argv[1] (random init) on an image with A-150's vocabulary.
PREDICT = f"""
import json, sys
import numpy as np
import sed, sed.predictor, sed.resources

predictor = sed.predictor.SEDPredictor.from_config_file(sys.argv[1], opts={TINY_TEXT!r})
image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
result = predictor(image, "ade150")
print(json.dumps({{"sed": sed.__file__, "ade150": str(sed.resources.vocabulary_path("ade150.json")),
                  "classes": len(result.class_names), "labels": list(result.labels.shape),
                  "default": list(predictor.default_vocabulary.names)}}))
"""


def run_python(args, cwd, env):
    """The venv's python on ``args`` in ``cwd`` with ``env``; fails with its stderr's end."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def child_env(**extra):
    """The environment of a child run: no package index, no PYTHONPATH but ``extra``'s."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **NO_NETWORK, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The project's wheel, built offline from a copy of its sources (so that no build folder
    lands in the repository)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT / "sed", source / "sed", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, source / name)
    run_python(["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), "."],
               cwd=source, env=child_env())
    (built,) = (tmp / "dist").glob("sed-*.whl")
    return built


def test_packaged_files_are_found_by_name():
    assert len(json.loads(vocabulary_path("ade150.json").read_text())) == 150
    assert len(load_vocabulary(str(vocabulary_path("eov_seg/ade20k_150.json")))) == 150
    assert {"ade150.json", "coco.json", "synthetic.json", "eov_seg/lvis_1203.json"} <= set(packaged_vocabularies())
    assert len(reference_path("pascalcontext_val.txt").read_text().split()) == 5104
    assert set(packaged_references()) == {"ade847_categories.json", "coco_stuff_categories.json",
                                          "pascalcontext_val.txt", "pc59_context_ids.json"}
    with pytest.raises(FileNotFoundError, match=r"'ade151.json'.*packaged: ade150.json, ade847.json"):
        vocabulary_path("ade151.json")
    with pytest.raises(FileNotFoundError, match=r"No packaged vocabulary '\.\./setup.py'"):
        vocabulary_path("../setup.py")
    with pytest.raises(FileNotFoundError, match="packaged: ade847_categories.json"):
        reference_path("ade150.json")


def test_config_file_values_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_file("datasets/ade150.json") == str(vocabulary_path("ade150.json"))
    assert resolve_data_file("datasets/eov_seg/ade20k_150.json") == str(vocabulary_path("eov_seg/ade20k_150.json"))
    assert resolve_data_file("sed/model_configs/sed_tiny.json") == str(package_root() / "model_configs" / "sed_tiny.json")
    assert resolve_model_name("sed/model_configs/sed_tiny.json") == "sed_tiny"
    assert load_vocabulary("datasets/synthetic.json").names[0] == "background"
    # A file of the working directory wins over the packaged one; other values are kept as given.
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "ade150.json").write_text('["mine"]')
    assert resolve_data_file("datasets/ade150.json") == "datasets/ade150.json"
    assert load_vocabulary("datasets/ade150.json").names == ("mine",)
    for value in ("", "/no/such/ade150.json", "datasets/ade151.json", "elsewhere/ade150.json", "ade150.json",
                  "datasets/../ade150.json"):
        assert resolve_data_file(value) == value
    with pytest.raises(FileNotFoundError, match=r"'datasets/ade151.json' does not exist \(relative paths are read "
                                                r"from the working directory, else as the package's files"):
        load_vocabulary("datasets/ade151.json")
    with pytest.raises(FileNotFoundError, match=r"open_clip model config 'sed/model_configs/nope.json' does not "
                                                r"exist \(relative paths are read from the working directory"):
        resolve_model_name("sed/model_configs/nope.json")


def test_wheel_ships_the_data_and_declares_the_dependencies(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        message = Parser().parsestr(z.read(metadata).decode())
        scripts = z.read(entry_points).decode()
    data = {f"sed/{p.relative_to(ROOT / 'sed').as_posix()}" for pattern in PACKAGE_DATA for p in (ROOT / "sed").glob(pattern)}
    assert {"sed/vocabularies/ade150.json", "sed/vocabularies/eov_seg/ade20k_150.json",
            "sed/reference/pascalcontext_val.txt", "sed/model_configs/sed_tiny.json"} <= data <= names
    assert "sed/resources.py" in names
    for name, target in CONSOLE_SCRIPTS.items():
        assert f"{name} = {target}" in scripts

    # The core requirements: exactly requirements.txt's runtime ones, each accepting its pin.
    declared = [Requirement(r) for r in message.get_all("Requires-Dist")]
    core = {canonicalize_name(r.name): r for r in declared if r.marker is None}
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())
    pins = {canonicalize_name(r.name): next(iter(r.specifier)).version for r in map(Requirement, filter(None, lines))}
    assert set(core) == set(pins) - NOT_RUNTIME
    for name, requirement in core.items():
        assert requirement.specifier.contains(pins[name]), f"{requirement} rejects requirements.txt's {pins[name]}"
    assert not any("detectron2" in canonicalize_name(r.name) for r in declared)  # not on the index under that name


@pytest.mark.slow
@pytest.mark.parametrize("install", ["wheel", "editable"])
def test_predictor_runs_outside_the_repository(install, wheel, tmp_path):
    """From a folder outside the repository, with the config's own vocabulary
    (``datasets/synthetic.json``) and CLIP model config (``sed/model_configs/sed_tiny.json``)
    read from the package: the wheel installed non-editable (which the repository's editable
    install must not shadow), and the editable install."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "predict.py").write_text(PREDICT)
    if install == "wheel":
        site = tmp_path / "site"
        run_python(["-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], cwd=tmp_path,
                   env=child_env())
        env, package = child_env(PYTHONPATH=str(site)), site / "sed"
    else:
        env, package = child_env(), ROOT / "sed"
    result = run_python(["predict.py", str(ROOT / "configs" / "synthetic_tiny.yaml")], cwd=folder, env=env)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(out["sed"]) == package / "__init__.py"
    assert Path(out["ade150"]) == package / "vocabularies" / "ade150.json"
    assert out["classes"] == 150 and out["labels"] == [60, 80]
    assert out["default"] == json.loads(vocabulary_path("synthetic.json").read_text())


def test_import_without_detectron2_says_how_to_install_it(tmp_path):
    block = "import sys; sys.modules['detectron2'] = None; import sed"
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=child_env(), capture_output=True,
                            text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert last.startswith("ImportError: sed needs detectron2, which pip does not install with it")
    assert "facebookresearch/detectron2" in last and "INSTALL.md" in last
