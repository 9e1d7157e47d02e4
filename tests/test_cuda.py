"""The CUDA tier (`bash tools/test.sh -m cuda`): both models on a GPU. Without one these tests
skip; SED_TEST_DEVICE=cpu runs them on the CPU instead (what `tools/gpu_check.sh --dry-run` does).

"tf32_off" is float32 with TensorFloat-32 off in matmuls and convolutions: outputs match the
fixtures as tightly as on the CPU. "default" is PyTorch's defaults (TF32 convolutions): scores
move by less than 0.01, so a label may flip only where the reference ranks two classes within
0.01 of each other (the fixtures' random weights make such near-ties common).
"""
import itertools
import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage

from helpers import (ROOT, TINY_TEXT as TINY, assert_panoptic_equal, build_eov_fixture, build_sed_fixture,
                     eov_training_inputs, image_input, run_sed, tiny_model)
from sed.train_loop import AccumulatingTrainer

DEVICE = os.environ.get("SED_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="no CUDA device (torch.cuda.is_available() is False): the CUDA tier needs a GPU "
                              "(SED_TEST_DEVICE=cpu runs it on the CPU)"),
]
ON_DEVICE = ["MODEL.DEVICE", DEVICE]
SETTINGS = ["tf32_off", "default"]
EOV_TINY = ["MODEL.EOV_SEG.TEXT_CACHE_DIR", ""]


@contextmanager
def precision(settings: str):
    """TF32 off in matmuls and cuDNN ("tf32_off"), or PyTorch's defaults ("default")."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if settings == "tf32_off":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def assert_scores_match(out: torch.Tensor, expected: torch.Tensor, settings: str):
    """(T, H, W) scores against the reference's, as the module docstring says."""
    out = out.float().cpu()
    if settings == "tf32_off":
        assert torch.allclose(out, expected, atol=1e-4), float((out - expected).abs().max())
        return
    assert (out - expected).abs().max() < 0.01
    flipped = out.argmax(0) != expected.argmax(0)
    if flipped.any():
        top2 = expected.topk(2, dim=0).values
        assert (top2[0] - top2[1])[flipped].max() < 0.01


def on_cpu(out: dict) -> dict:
    ids, info = out["panoptic_seg"]
    return {**out, "panoptic_seg": (ids.cpu(), info), "instances": out["instances"].to("cpu")}


@torch.no_grad()
@pytest.mark.parametrize("settings", SETTINGS)
def test_sed_fixture_parity(sed_cases, settings):
    model = build_sed_fixture("[1,1]", *ON_DEVICE).eval()
    with precision(settings):
        for case in sed_cases["eval"]:
            assert_scores_match(run_sed(model, case["image"]), case["sem_seg"], settings)


@torch.no_grad()
@pytest.mark.parametrize("topk", [1, 2])
def test_sed_early_rejection_fast_path(sed_cases, topk):
    model = build_sed_fixture("[1,1]", *ON_DEVICE, "TEST.FAST_INFERENCE", "True", "TEST.TOPK", str(topk)).eval()
    with precision("tf32_off"):
        for case, expected in zip(sed_cases["eval"], sed_cases["fast"][topk]):
            out = run_sed(model, case["image"]).cpu()
            assert_scores_match(out, expected, "tf32_off")
            assert torch.equal(out.flatten(1).abs().sum(1) == 0, expected.flatten(1).abs().sum(1) == 0)


@torch.no_grad()
@pytest.mark.parametrize("settings", SETTINGS)
def test_eov_seg_fixture_parity(eov_cases, settings):
    model = build_eov_fixture("panoptic", *ON_DEVICE)
    with precision(settings):
        for case in eov_cases["eval"]:
            out = on_cpu(model([image_input(case["image"])])[0])
            assert_scores_match(out["sem_seg"], case["panoptic"]["sem_seg"], settings)
            if settings == "tf32_off":
                assert_panoptic_equal(out, case["panoptic"])


@torch.no_grad()
@pytest.mark.parametrize("fast", [False, True])
def test_sed_batched_equals_per_image(fast):
    model = tiny_model(*ON_DEVICE, "TEST.FAST_INFERENCE", str(fast), "TEST.TOPK", "2")
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in [(200, 256), (256, 196)]]
    inputs = [{"image": im, "height": im.shape[1], "width": im.shape[2]} for im in images]
    with precision("tf32_off"):
        batched = model(inputs)
        for inp, out in zip(inputs, batched):
            assert torch.allclose(out["sem_seg"], model([inp])[0]["sem_seg"], atol=1e-5)


@torch.no_grad()
def test_eov_seg_batched_equals_per_image(eov_cases):
    model = build_eov_fixture("panoptic", *ON_DEVICE)
    with precision("tf32_off"):
        batched = model([image_input(case["image"]) for case in eov_cases["eval"]])
        for out, case in zip(batched, eov_cases["eval"]):
            alone = on_cpu(model([image_input(case["image"])])[0])
            out = on_cpu(out)
            assert torch.allclose(out["sem_seg"], alone["sem_seg"], atol=1e-4)
            assert out["panoptic_seg"][1] == alone["panoptic_seg"][1]


def sed_training(cases):
    model = build_sed_fixture("[2,2]", *ON_DEVICE).train()
    train = cases["train"]
    return model, [{"image": i, "sem_seg": t} for i, t in zip(train["images"], train["targets"])], train["losses"]


def eov_seg_training(cases):
    # Mask points are sampled with the device's generator: the losses differ from the CPU reference's.
    return build_eov_fixture("panoptic", *ON_DEVICE).train(), eov_training_inputs(cases["train"]), None


TRAINING = {"SED": (sed_training, "sed_cases"), "EOV_SEG": (eov_seg_training, "eov_cases")}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("family", list(TRAINING))
def test_mixed_precision_training_steps(family, dtype, request):
    """Steps of the training loop under autocast: finite losses, and the trainable weights move
    (float16: the gradient scaler skips steps whose scaled gradients overflow, halving its scale,
    until one is taken)."""
    if dtype == "float16" and DEVICE == "cpu":
        pytest.skip("float16 autocast on the CPU has no fast kernels (a minute a step); the GPU runs it")
    build, cases = TRAINING[family]
    model, batch, reference = build(request.getfixturevalue(cases))
    amp = getattr(torch, dtype)
    if reference is not None:  # the autocast losses stay within 5% of the float32 reference's
        with torch.autocast(DEVICE, dtype=amp):
            losses = model(batch)
        for name, expected in reference.items():
            assert losses[name].item() == pytest.approx(expected, rel=0.05), name
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    trainer = AccumulatingTrainer(model, itertools.repeat(batch), torch.optim.SGD(trainable, lr=1e-3),
                                  amp_dtype=amp, device_type=DEVICE)
    moved = False
    with EventStorage() as storage:
        for trainer.iter in range(12):
            trainer.run_step()  # raises on a non-finite loss
            storage.step()
            moved = any(not torch.equal(b, p) for b, p in zip(before, trainable))
            if moved:
                break
    assert (trainer.grad_scaler is not None) == (dtype == "float16")
    assert moved


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_group_training_through_train_net(env_with_datasets, tmp_path):
    """train_net.py's main (sed.engine.main) in a one-process group (NCCL on a GPU, gloo on the CPU), as
    detectron2's launcher starts each of several processes, with AMP."""
    opts = ["OUTPUT_DIR", str(tmp_path / "out"), "MODEL.DEVICE", DEVICE, "SOLVER.MAX_ITER", "2",
            "TEST.EVAL_PERIOD", "0", "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(96,)",
            "INPUT.CROP.SIZE", "(96,96)", "DATALOADER.NUM_WORKERS", "0", "SOLVER.AMP.ENABLED", "True",
            "SOLVER.AMP.PRECISION", "bfloat16", *TINY]
    code = (
        "import sys, torch.distributed as dist\n"
        "from detectron2.engine import default_argument_parser\n"
        "from detectron2.engine.launch import _distributed_worker\n"
        "from sed.engine import main\n"
        "args = default_argument_parser().parse_args(sys.argv[2:])\n"
        "_distributed_worker(0, main, 1, 1, 0, sys.argv[1], (args,))\n"
        "print('backend', dist.get_backend(), 'world', dist.get_world_size())\n"
    )
    cmd = [sys.executable, "-c", code, f"tcp://127.0.0.1:{free_port()}",
           "--config-file", "configs/synthetic_tiny.yaml", *opts]
    result = subprocess.run(cmd, cwd=ROOT, env=env_with_datasets, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"backend {'nccl' if DEVICE == 'cuda' else 'gloo'} world 1" in result.stdout
    assert (tmp_path / "out" / "model_final.pth").is_file()


@pytest.mark.parametrize("config, extra", [
    ("configs/synthetic_tiny.yaml", ["--vocabulary", "12", "--fast", "--topk", "2", "--dtype", "bfloat16"]),
    ("configs/eov_seg/synthetic_tiny.yaml", ["--vocabulary", "coco_panoptic", "--image-size", "64", "85"]),
])
def test_benchmark_on_device_writes_its_json(tmp_path, config, extra):
    out = tmp_path / "bench.json"
    no_cache = TINY if "eov_seg" not in config else EOV_TINY
    result = subprocess.run([sys.executable, "tools/benchmark.py", "--config-file", config, "--device", DEVICE,
                             "--image-size", "128", *extra, "--warmup", "1", "--iters", "2", "--output", str(out),
                             "--opts", *no_cache], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["device"] == DEVICE and figures["peak_memory_mb"] > 0 and figures["ms_per_image"]["median"] > 0
    if DEVICE == "cuda":
        assert figures["device_name"] == torch.cuda.get_device_name() and figures["versions"]["cuda"]


def test_predictor_on_device_matches_the_cpu(weights):
    from sed import SEDPredictor

    config = str(ROOT / "configs" / "synthetic_tiny.yaml")
    image = np.random.default_rng(1).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    vocabulary = ["red circle", "sky", "grass"]
    on_cpu_ = SEDPredictor.from_config_file(config, weights=str(weights), opts=[*TINY, "MODEL.DEVICE", "cpu"])
    on_device = SEDPredictor.from_config_file(config, weights=str(weights), opts=[*TINY, *ON_DEVICE])
    assert next(on_device.model.parameters()).device.type == DEVICE
    with precision("tf32_off"):
        got = on_device(image, vocabulary)
    expected = on_cpu_(image, vocabulary)
    assert got.probabilities.device.type == "cpu" and got.labels.shape == (100, 140)
    assert torch.allclose(got.probabilities, expected.probabilities, atol=1e-4)
