import importlib.util
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from sed import add_project_config, add_sed_config
from sed.resources import vocabulary_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "sed_official_tiny"
TINY_CLIP = str(ROOT / "sed" / "model_configs" / "sed_tiny.json")
# configs/synthetic_tiny.yaml's SED quickly: one prompt template, no text-embedding disk cache.
TINY_TEXT = ["MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single", "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", ""]


# Loggers that detectron2's setup_logger configures (handlers, no propagation) when a test runs
# an entry point in-process: restored after each test, so caplog sees the next test's records.
CONFIGURED_LOGGERS = ("detectron2", "d2", "fvcore", "sed")


@pytest.fixture(autouse=True)
def isolated_logging():
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate, logging.getLogger(name).level)
             for name in CONFIGURED_LOGGERS}
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        if (logger.handlers, logger.propagate, logger.level) != (handlers, propagate, level):
            logger.handlers[:], logger.propagate = handlers, propagate
            logger.setLevel(level)
            setup_logger.cache_clear()  # its cache would otherwise hand back the unconfigured logger


def load_repository_tool(name: str):
    """The module of ``tools/NAME.py``, a repository tool outside the package (the install
    bundle, the browser driver), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_fixture():
    if not (FIXTURE / "model_final.pth").is_file():
        pytest.skip(f"../shared is absent ({FIXTURE} not found): released-format fixture unavailable")


def make_cfg(*opts, config_file=None):
    cfg = get_cfg()
    add_sed_config(cfg)
    if config_file:
        cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "SED", "MODEL.DEVICE", "cpu",
                         "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", "", *opts])
    return cfg


def tiny_model(*opts, seed=0):
    """A randomly initialised SED on the tiny CLIP, in eval mode."""
    torch.manual_seed(seed)
    cfg = make_cfg(
        "MODEL.ENC.CLIP_MODEL_NAME", TINY_CLIP, "MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "",
        "MODEL.ENC.IMAGE_SIZE", "256",
        "MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", str(vocabulary_path("synthetic.json")),
        "MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", str(vocabulary_path("voc20.json")),
        "MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single", *opts,
    )
    return build_model(cfg).eval()


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A checkpoint of configs/synthetic_tiny.yaml's SED, randomly initialised (seed 0)."""
    torch.manual_seed(0)
    cfg = make_cfg("MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "", *TINY_TEXT, config_file=ROOT / "configs" / "synthetic_tiny.yaml")
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small generated copy of the embedded default dataset."""
    from sed.data.synthetic import generate

    root = tmp_path_factory.mktemp("datasets")
    generate(str(root), size=96, splits={"train": 16, "val": 6})
    return root


@pytest.fixture(scope="session")
def panoptic_root(tmp_path_factory):
    """A small generated copy of the panoptic embedded default dataset."""
    from sed.data.synthetic import generate_panoptic

    root = tmp_path_factory.mktemp("panoptic_datasets")
    generate_panoptic(str(root), size=96, splits={"train": 12, "val": 4})
    return root


@pytest.fixture
def env_with_datasets(synthetic_root, tmp_path):
    env = dict(os.environ)
    env["DETECTRON2_DATASETS"] = str(synthetic_root)
    env["HOME"] = str(tmp_path)  # keeps the text-embedding cache inside the test
    return env


def eov_cfg(*opts, config_file=ROOT / "configs" / "eov_seg" / "eov_seg_R50.yaml"):
    """An EOV-Seg config on the CPU, without the text-embedding disk cache."""
    cfg = get_cfg()
    add_project_config(cfg)
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.EOV_SEG.TEXT_CACHE_DIR", "", *opts])
    return cfg


def eov_tiny_model(train_json, test_json, *opts, seed=0):
    """A randomly initialised EOV-Seg on tiny ResNet and ViT CLIPs (the released R50 config's
    settings otherwise, smaller widths), in eval mode."""
    torch.manual_seed(seed)
    cfg = eov_cfg(
        "MODEL.OV_HEAD.CLIP_MODEL_NAME", str(ROOT / "sed" / "model_configs" / "eov_tiny_rn.json"),
        "MODEL.OV_HEAD.CLIP_PRETRAINED_WEIGHTS", "",
        "MODEL.OV_HEAD.CLIP_VIT_MODEL_NAME", str(ROOT / "sed" / "model_configs" / "eov_tiny_vit.json"),
        "MODEL.OV_HEAD.CLIP_VIT_PRETRAINED_WEIGHTS", "",
        "MODEL.OV_HEAD.EMBED_DIM", "32", "MODEL.EOV_SEG.HIDDEN_DIM", "32", "MODEL.EOV_SEG.AGG_DIM", "16",
        "MODEL.EOV_SEG.NUM_PROPOSALS", "12", "MODEL.EOV_SEG.TRAIN_NUM_POINTS", "64",
        "MODEL.EOV_SEG.TRAIN_CLASS_JSON", str(train_json), "MODEL.EOV_SEG.TEST_CLASS_JSON", str(test_json),
        "MODEL.EOV_SEG.NUM_CLASSES", str(len(json.loads(Path(train_json).read_text()))), *opts,
    )
    return build_model(cfg).eval()


def kill_when(args, env, ready, timeout=300) -> None:
    """Start the command ``args`` in its own process group, poll ``ready()`` and kill the group
    (the command and every process it started) with SIGKILL as soon as it holds; fails if the
    command ended first."""
    with tempfile.TemporaryFile() as output:
        run = subprocess.Popen(args, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while not ready() and time.time() < deadline:
            if run.poll() is not None:
                output.seek(0)
                raise AssertionError(f"{' '.join(map(str, args))} ended (status {run.returncode}) before it was "
                                     f"killed:\n{output.read()[-3000:].decode(errors='replace')}")
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert ready(), f"{' '.join(map(str, args))} was killed after {timeout} s without getting there"


def kill_after_first_checkpoint(args, out, env) -> int:
    """Start the training command ``args`` (writing to ``out``), kill it with SIGKILL as soon as
    it has written a checkpoint, and return the iteration a resumed run starts from."""
    kill_when(args, env, lambda: (out / "last_checkpoint").exists())
    assert not (out / "model_final.pth").exists()
    done = (out / "last_checkpoint").read_text()
    return int(done[len("model_"):-len(".pth")]) + 1
