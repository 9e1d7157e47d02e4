"""Compiled inference (TEST.COMPILE, sed.compile): the released-format fixtures compiled give
their eager outputs (and the reference's), one graph per compiled network whatever the
vocabulary and the image size, and a second process loads the graphs from inductor's cache."""
import json
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser

from helpers import (ROOT, assert_panoptic_equal, build_eov_fixture, build_sed_fixture, eov_fixture_cfg, image_input,
                     run_sed, sed_fixture_cfg, sed_fixture_opts)
from sed import engine
from sed.compile import compile_log, compile_model, eager, is_compiled
from sed.tools.benchmark import agreement

# Minutes of compiling.
pytestmark = pytest.mark.slow


def graphs_of(*modules):
    """The graphs this process compiled for the named modules."""
    return [g for g in compile_log() if g["module"] in modules]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """An empty inductor cache folder for this module's compiled models."""
    return str(tmp_path_factory.mktemp("inductor"))


@pytest.fixture(scope="module")
def sed_compiled(cache):
    model = build_sed_fixture("[1,1]", "TEST.COMPILE_CACHE_DIR", cache).eval()
    return compile_model(model, sed_fixture_cfg("[1,1]", "TEST.COMPILE_CACHE_DIR", cache))


@pytest.fixture(scope="module")
def eov_compiled(cache):
    return compile_model(build_eov_fixture("panoptic"), eov_fixture_cfg("panoptic", "TEST.COMPILE_CACHE_DIR", cache))


@torch.no_grad()
def test_sed_compiled_equals_eager_plain_and_fast(sed_compiled, sed_cases):
    model = sed_compiled
    assert is_compiled(model)
    for case in sed_cases["eval"]:
        out = run_sed(model, case["image"])
        with eager(model):
            expected = run_sed(model, case["image"])
        assert (out - expected).abs().max() <= 1e-4
        assert torch.allclose(out, case["sem_seg"], atol=1e-4)  # the reference's outputs
    model.fast_inference = True
    try:
        for topk in (1, 2):
            model.topk = topk
            for case, reference in zip(sed_cases["eval"], sed_cases["fast"][topk]):
                out = run_sed(model, case["image"])
                with eager(model):
                    expected = run_sed(model, case["image"])
                assert (out - expected).abs().max() <= 1e-4
                assert torch.allclose(out, reference, atol=1e-4)
    finally:
        model.fast_inference = False
    # Another vocabulary (the training one) runs the same graph.
    names = model.test_class_names
    model.test_class_names = model.train_class_names
    try:
        assert run_sed(model, sed_cases["eval"][0]["image"]).shape[0] == len(model.train_class_names)
    finally:
        model.test_class_names = names
    assert len(graphs_of("encoder")) == 1 and graphs_of("encoder")[0]["cache_misses"] > 0  # compiled anew


@torch.no_grad()
def test_eov_compiled_equals_eager_and_the_reference(eov_compiled, eov_cases):
    model = eov_compiled
    sizes = {tuple(-(-s // model.size_divisibility) for s in case["image"].shape[-2:]) for case in eov_cases["eval"]}
    assert len(sizes) == 2  # the two images are padded to different canvases
    for case in eov_cases["eval"]:
        out = model([image_input(case["image"])])[0]
        with eager(model):
            expected = model([image_input(case["image"])])[0]
        assert (out["sem_seg"] - expected["sem_seg"]).abs().max() <= 1e-4
        assert torch.equal(out["panoptic_seg"][0], expected["panoptic_seg"][0])
        assert out["panoptic_seg"][1] == expected["panoptic_seg"][1]
        assert torch.allclose(out["sem_seg"], case["panoptic"]["sem_seg"], atol=1e-4)  # the reference's
        assert_panoptic_equal(out, case["panoptic"])


@torch.no_grad()
def test_eov_compiles_one_graph_per_network_for_any_canvas_and_vocabulary(eov_compiled, eov_cases):
    """New canvases and another vocabulary run the graphs already built. The convolutions'
    fake kernels guard their choice of kernel on their output's number of elements (20,480): the
    fixture's tiny tower puts its two images (canvases 128x160 and 128x96) on either side of
    that line, so a network may have a graph for each; a real tower's hundreds of channels put
    every image above it, and an evaluation compiles one graph per network."""
    model = eov_compiled
    networks = ("cnn_backbone", "vit_backbone", "lite_aggr")
    for case in eov_cases["eval"]:
        model([image_input(case["image"])])
    graphs = len(graphs_of(*networks))
    assert 3 <= graphs <= 6
    vocabulary = model.test_vocabulary
    model.test_vocabulary = model.train_vocabulary
    try:
        for size in ((150, 110), (90, 180)):  # padded to 160x128 and 96x192
            image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
            out = model([image_input(image)])[0]
            with eager(model):
                expected = model([image_input(image)])[0]
            assert out["sem_seg"].shape[0] == len(model.train_vocabulary)
            assert (out["sem_seg"] - expected["sem_seg"]).abs().max() <= 1e-4
            assert torch.equal(out["panoptic_seg"][0], expected["panoptic_seg"][0])
    finally:
        model.test_vocabulary = vocabulary
    assert len(graphs_of(*networks)) == graphs


@torch.no_grad()
def test_models_compiled_in_one_process_keep_their_own_weights(sed_compiled, sed_cases, cache):
    """Frozen weights are the graph's constants: a second model of the same class, with other
    weights, gets a graph of its own, not the first model's."""
    other = build_sed_fixture("[1,1]").eval()
    torch.manual_seed(0)
    for parameter in other.encoder.clip.visual.parameters():
        parameter.add_(torch.randn_like(parameter) * 0.05)
    compile_model(other, sed_fixture_cfg("[1,1]", "TEST.COMPILE_CACHE_DIR", cache))
    image = sed_cases["eval"][0]["image"]
    out, first = run_sed(other, image), run_sed(sed_compiled, image)
    with eager(other):
        expected = run_sed(other, image)
    assert (out - expected).abs().max() <= 1e-4
    assert (out - first).abs().max() > 1e-2


def test_weights_loaded_into_a_compiled_model_stop(sed_compiled):
    with pytest.raises(RuntimeError, match="load the weights first, then compile"):
        DetectionCheckpointer(sed_compiled).load(sed_fixture_cfg("[1,1]").MODEL.WEIGHTS)


def test_compiled_training_stops_before_anything_is_built():
    args = default_argument_parser().parse_args(["--config-file", "configs/synthetic_tiny.yaml",
                                                 "TEST.COMPILE", "True"])
    with pytest.raises(ValueError, match="TEST.COMPILE compiles inference .* give --eval-only"):
        engine.build_cfg(args)


@torch.no_grad()
def test_gradients_run_the_modules_eagerly(sed_compiled, sed_cases):
    """A call with gradients (training) never runs the frozen inference graph."""
    model = sed_compiled
    before = len(compile_log())
    features = model.encoder(model.preprocess([{"image": sed_cases["eval"][0]["image"].float()}]))
    with torch.enable_grad():
        with_grad = model.encoder(model.preprocess([{"image": sed_cases["eval"][0]["image"].float()}]))
    assert with_grad["res2"].requires_grad and len(compile_log()) == before
    assert (with_grad["clip_vis_dense"] - features["clip_vis_dense"]).abs().max() <= 1e-4


@pytest.fixture(scope="module")
def sed_bfloat16(sed_compiled, sed_cases):
    """The compiled SED fixture's bfloat16 outputs and its eager ones (a graph of its own:
    autocast is part of what a graph is compiled for)."""
    model = sed_compiled
    inputs = [image_input(case["image"]) for case in sed_cases["eval"]]
    model.inference_dtype = torch.bfloat16
    try:
        with torch.no_grad():
            compiled = model(inputs)
            with eager(model):
                reference = model(inputs)
    finally:
        model.inference_dtype = None
    return compiled, reference


def test_bfloat16_compiled_agrees_with_bfloat16_eager(sed_bfloat16):
    """As bfloat16 against float32: scores move by under 0.01, so a label flips only where the
    eager bfloat16 scores rank two classes within twice that change (both may move)."""
    compiled, reference = sed_bfloat16
    figures = agreement(compiled, reference, "eager")
    change = figures["max_probability_change_vs_eager"]
    assert 0 < change < 0.01
    for out, ref in zip(compiled, reference):
        flipped = out["sem_seg"].argmax(0) != ref["sem_seg"].argmax(0)
        top2 = ref["sem_seg"].topk(2, dim=0).values
        assert not flipped.any() or (top2[0] - top2[1])[flipped].max() <= 2 * change
    # The fixture's random weights make near-ties common: 79% of the labels stay (bfloat16
    # eager against float32: 81%, tests/test_official_fixture.py).
    assert figures["argmax_agreement_vs_eager"] > 0.7


def test_benchmark_loads_the_graphs_from_the_cache(sed_compiled, cache, tmp_path):
    """A second process (tools/benchmark.py --compile, the fixture's model) finds the graph
    this module compiled in inductor's cache, then times compiled against eager."""
    out = tmp_path / "compiled.json"
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", "configs/convnextB_768.yaml", "--vocabulary", "6",
         "--image-size", "96", "--warmup", "0", "--iters", "2", "--no-flops", "--random-text-embeddings", "--compile",
         "--output", str(out), "--opts", *sed_fixture_opts("[1,1]"),
         "TEST.COMPILE_CACHE_DIR", cache], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    compiled = figures["compiled"]
    assert [g["module"] for g in compiled["compile"]["graphs"]] == ["encoder"]
    assert compiled["compile"]["cache_hits"] > 0 and compiled["compile"]["cache_misses"] == 0
    assert compiled["compile"]["cache_dir"] == cache
    assert compiled["graphs_after_timing"] == 1  # no recompilation while timing
    assert compiled["argmax_agreement_vs_eager"] == 1 and compiled["max_probability_change_vs_eager"] <= 1e-4
    assert figures["ms_per_image"]["median"] > 0 and compiled["ms_per_image"]["median"] > 0
    assert "compiled encoder in" in result.stderr and "from inductor's cache" in result.stderr
