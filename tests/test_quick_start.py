"""The quick start's path (bash tools/quickstart.sh: the embedded default dataset,
tools/pretrain_tiny_clip.py, configs/synthetic_tiny.yaml through run.sh): the README's promise
under two floating-point orders, and its training deterministic given the seed."""
import json
import os

import pytest

from helpers import FAST, pretrain_tiny_clip, quick_start_promise, sh, train_net

# Whole quick starts: run first among the test files when the tiers run in parallel (conftest.py).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_start_datasets(tmp_path_factory):
    """The embedded default dataset as datasets/prepare_synthetic.py writes it."""
    from sed.data.synthetic import generate

    root = tmp_path_factory.mktemp("datasets")
    generate(str(root))
    return root


# Two floating-point orders on any x86-64 CPU with AVX, both in the promise's protocol
# (docs/quick-start-runs.md): as installed (the CPU's best kernels), and ATen's scalar kernels
# with oneDNN held to AVX (no FMA). One thread each, so that the order is one of the protocol's
# whatever the machine and the number of test workers.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FLOATING_POINT_ORDERS = {
    "as-installed": ONE_THREAD,
    "scalar-aten-avx-onednn": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX", **ONE_THREAD},
}


@pytest.mark.parametrize("order", sorted(FLOATING_POINT_ORDERS))
def test_quick_start_keeps_its_promise(tmp_path, quick_start_datasets, order):
    """The quick start's path as bash tools/quickstart.sh runs it (the embedded default dataset,
    tools/pretrain_tiny_clip.py, configs/synthetic_tiny.yaml through run.sh) under two
    floating-point orders, to the README's floor for every class and the mIoU. A class the
    model fails to learn scores near 0."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(quick_start_datasets), HOME=str(tmp_path),
               **FLOATING_POINT_ORDERS[order])
    out = tmp_path / "out"
    clip = tmp_path / "tiny_clip_pretrained.pt"
    pretrained = pretrain_tiny_clip(clip, env=env)
    assert pretrained.returncode == 0, pretrained.stderr[-3000:]
    result = sh("run.sh", "configs/synthetic_tiny.yaml", "0", str(out), "MODEL.ENC.CLIP_PRETRAINED_WEIGHTS",
                str(clip), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "results.json").read_text())["sed_synthetic_val"]["sem_seg"]
    ious = {k[len("IoU-"):]: v for k, v in metrics.items() if k.startswith("IoU-")}
    promise = quick_start_promise("sed")
    assert len(ious) == 5 and min(ious.values()) >= promise["class"], ious
    assert metrics["mIoU"] >= promise["mIoU"], metrics["mIoU"]


def test_quick_start_training_is_deterministic_given_the_seed(tmp_path, env_with_datasets):
    """The quick start's path: pretrained tiny CLIP, then two runs with one seed log the same losses."""
    clip = tmp_path / "clip.pt"
    pretrained = pretrain_tiny_clip(clip, "--text-steps", "20", "--image-steps", "10", "--min-accuracy", "0",
                                    env=env_with_datasets)
    assert pretrained.returncode == 0, pretrained.stderr[-3000:]
    losses = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = train_net("OUTPUT_DIR", str(out), *FAST, "MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", str(clip),
                           "SOLVER.MAX_ITER", "3", "TEST.EVAL_PERIOD", "0", "SEED", "5", env=env_with_datasets)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
        losses.append([{k: v for k, v in m.items() if "loss" in k} for m in metrics])
    assert losses[0] == losses[1] and losses[0] and losses[0][0]
