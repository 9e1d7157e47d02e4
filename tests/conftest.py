"""Pytest fixtures and hooks the test files share; the plain helpers are in helpers.py."""
import logging
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

# Failed asserts in helpers.py (kill_when, assert_panoptic_equal) show their values, as in the test files.
pytest.register_assert_rewrite("helpers")

from helpers import (EOV_FIXTURE, ROOT, SED_FIXTURE, TINY_TEXT, available_cpus, make_cfg,  # noqa: E402
                     require_eov_fixture, require_sed_fixture, share_cpus)

# Loggers that detectron2's setup_logger configures (handlers, no propagation) when a test runs
# an entry point in-process: restored after each test, so caplog sees the next test's records.
CONFIGURED_LOGGERS = ("detectron2", "d2", "fvcore", "sed")


def pytest_configure(config):
    """Under pytest-xdist (tools/test.sh runs the tiers with a worker per CPU), each worker and
    the commands it starts use an equal share of the CPUs."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        share_cpus(workers, available_cpus())


def pytest_collection_modifyitems(config, items):
    """Test files marked slow as a whole (their tests are whole training, evaluation and check
    runs) first, in a stable sort: when the tiers run in parallel, a file per worker, the
    longest files start first and the workers finish close together."""

    def slow_file(item):
        marks = getattr(item.module, "pytestmark", [])
        return any(mark.name == "slow" for mark in (marks if isinstance(marks, list) else [marks]))

    items.sort(key=lambda item: not slow_file(item))


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


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A checkpoint of configs/synthetic_tiny.yaml's SED, randomly initialised (seed 0)."""
    torch.manual_seed(0)
    cfg = make_cfg("MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "", *TINY_TEXT, config_file=ROOT / "configs" / "synthetic_tiny.yaml")
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def sed_cases():
    """The SED fixture's inputs and the reference's outputs (skips without ../shared)."""
    require_sed_fixture()
    return torch.load(SED_FIXTURE / "cases.pt", weights_only=True)


@pytest.fixture(scope="session")
def eov_cases():
    """The EOV-Seg fixture's inputs and the reference's outputs (skips without ../shared)."""
    require_eov_fixture()
    return torch.load(EOV_FIXTURE / "cases.pt", weights_only=True)


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
