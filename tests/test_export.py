"""ONNX export (tools/export.py, sed.export) and the onnxruntime side (sed.deploy): onnxruntime
gives PyTorch's outputs for both released-format fixtures and a random tiny config, on two
image sizes and two vocabularies (3 and 7 classes) through one file; EOV-Seg's NumPy
post-processing gives PyTorch's panoptic id maps; what cannot be exported is named."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from torch import nn

from helpers import (ROOT, SED_FIXTURE, build_eov_fixture, build_sed_fixture, eov_fixture_cfg, sed_fixture_cfg,
                     tiny_model)
from sed import SEDPredictor
from sed.deploy import ExportedModel, image_to_chw, onnxruntime_session, read_metadata, text_embeddings
from sed.modeling.eov_seg.deploy import panoptic_inference, preprocess, vocabulary_inputs
from sed.modeling.eov_seg.deploy import postprocess as eov_seg_postprocess
from sed.export import ExportError, checked_session, export_image_side, export_text_tower, save, to_onnx, trace
from sed.modeling.eov_seg import inference as torch_inference
from sed.predictor import load_config
from sed.vocabulary import Vocabulary, load_vocabulary

SIZES = {"SED": [(200, 256), (256, 196)], "EOV_SEG": [(100, 132), (120, 90)]}  # the fixtures' images


def vocabularies(vocabulary: Vocabulary):
    """Two vocabularies of 3 and 7 classes from ``vocabulary`` (overlapping, other orders)."""
    picks = [[0, 1, 2], [7, 6, 5, 4, 3, 2, 1]]
    return [Vocabulary(tuple(vocabulary.names[i] for i in p), tuple(vocabulary.isthing[i] for i in p)) for p in picks]


def images(family):
    torch.manual_seed(0)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in SIZES[family]]


def hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


# --- SED, released-format fixture ------------------------------------------------------------


@pytest.fixture(scope="module")
def sed_export(tmp_path_factory):
    """The SED fixture exported with dynamic shapes (plain and early rejection, TOPK 1) and
    its text tower."""
    cfg = sed_fixture_cfg("[1,1]")
    model = build_sed_fixture("[1,1]").eval()
    out = tmp_path_factory.mktemp("sed_onnx")
    checks = {"plain": export_image_side(model, cfg, out / "sed.onnx", height=96, width=128, dynamic=True),
              "text": export_text_tower(model, cfg, out / "text.onnx")}
    fast = build_sed_fixture("[1,1]", "TEST.FAST_INFERENCE", "True", "TEST.TOPK", "1").eval()
    checks["fast"] = export_image_side(fast, cfg, out / "fast.onnx", height=96, width=128, dynamic=True)
    return {"model": model, "fast": fast, "dir": out, "checks": checks}


@pytest.mark.slow
@torch.no_grad()
@pytest.mark.parametrize("path", ["sed.onnx", "fast.onnx"])
def test_sed_fixture_any_size_and_vocabulary_through_one_file(sed_export, path):
    model = sed_export["fast" if path == "fast.onnx" else "model"]
    session = onnxruntime_session(sed_export["dir"] / path)
    vocabulary = load_vocabulary(str(SED_FIXTURE / "test_classes.json"))
    for classes in vocabularies(vocabulary):
        model.test_class_names = list(classes.names)
        text = model.text_embeddings(model.test_class_names)
        for image in images("SED"):
            expected = model([{"image": image}])[0]["sem_seg"]
            (out,) = session.run(None, {"image": image_to_chw(hwc(image)), "text": text.numpy()})
            assert out.shape == (len(classes), *image.shape[1:])
            assert np.abs(out - expected.numpy()).max() < 1e-4
            assert np.array_equal(out.reshape(len(classes), -1).max(1) == 0, expected.flatten(1).amax(1).numpy() == 0)
    assert max(sed_export["checks"]["plain" if path == "sed.onnx" else "fast"].values()) < 1e-4


@pytest.mark.slow
def test_sed_fixture_reference_outputs(sed_export):
    """The fixture's reference probabilities (its 20 classes), plain and with early rejection."""
    cases = torch.load(SED_FIXTURE / "cases.pt", weights_only=True)
    names = load_vocabulary(str(SED_FIXTURE / "test_classes.json")).names
    text = sed_export["model"].text_embeddings(names).numpy()
    for path, expected in [("sed.onnx", [c["sem_seg"] for c in cases["eval"]]), ("fast.onnx", cases["fast"][1])]:
        session = onnxruntime_session(sed_export["dir"] / path)
        rejected = []
        for case, reference in zip(cases["eval"], expected):
            (out,) = session.run(None, {"image": case["image"].float().numpy(), "text": text})
            assert np.abs(out - reference.numpy()).max() < 1e-4
            rejected.append(int((out.reshape(len(out), -1).max(1) == 0).sum()))
        assert rejected == ([2, 1] if path == "fast.onnx" else [0, 0])  # early rejection ran in the graph


@pytest.mark.slow
def test_sed_text_tower_gives_the_class_embeddings(sed_export):
    model = sed_export["model"]
    names = ["cat", "dog, puppy", "a rather long class name, with a synonym"]
    path = sed_export["dir"] / "text.onnx"
    out = text_embeddings(onnxruntime_session(path), names, read_metadata(path)["text"])
    assert out.shape == tuple(model.text_embeddings(names).shape)
    assert np.abs(out - model.text_embeddings(names).numpy()).max() < 1e-5
    assert sed_export["checks"]["text"]["embeddings"] < 1e-5


# --- EOV-Seg, released-format fixture ----------------------------------------------------------


@pytest.fixture(scope="module")
def eov_export(tmp_path_factory):
    cfg = eov_fixture_cfg()
    model = build_eov_fixture()
    path = tmp_path_factory.mktemp("eov_onnx") / "eov_seg.onnx"
    check = export_image_side(model, cfg, path, height=128, width=96, dynamic=True)
    return {"model": model, "path": path, "check": check}


def assert_same_panoptic(numpy_out: dict, torch_out: dict):
    ids, info = numpy_out["panoptic_seg"]
    expected_ids, expected_info = torch_out["panoptic_seg"]
    assert info == expected_info and len(info) > 0
    assert ids.dtype == np.int32 and np.array_equal(ids, expected_ids.numpy())
    assert np.abs(numpy_out["sem_seg"] - torch_out["sem_seg"].numpy()).max() < 1e-4
    instances, expected = numpy_out["instances"], torch_out["instances"]
    assert np.array_equal(instances["pred_classes"], expected.pred_classes.numpy())
    assert np.abs(instances["scores"] - expected.scores.numpy()).max() < 1e-4
    assert np.array_equal(instances["pred_masks"], expected.pred_masks.numpy())


@pytest.mark.slow
@torch.no_grad()
def test_eov_seg_fixture_any_size_and_vocabulary_through_one_file(eov_export):
    model, session = eov_export["model"], onnxruntime_session(eov_export["path"])
    metadata = read_metadata(eov_export["path"])
    assert metadata["family"] == "EOV_SEG" and metadata["panoptic_on"] and metadata["instance_on"]
    segments = 0
    for vocabulary in vocabularies(model.test_vocabulary):
        model.test_vocabulary = vocabulary
        inputs = vocabulary_inputs(model.text_embeddings(vocabulary.names).numpy(), vocabulary, metadata)
        assert inputs["name_index"].shape[1] == 2  # synonyms: "cat, kitten", "car, automobile"
        for image in images("EOV_SEG"):
            x, size = preprocess(hwc(image), metadata)
            assert x.shape[1] % 32 == 0 and x.shape[2] % 32 == 0 and size == tuple(image.shape[1:])
            logprobs, masks = session.run(None, {"image": x, **inputs})
            classifier = model.text_classifier(vocabulary)
            expected_logprobs, expected_masks = model.head_outputs(torch.from_numpy(x)[None], classifier,
                                                                   model.seen_classes())
            assert np.abs(np.exp(logprobs) - expected_logprobs[0].exp().numpy()).max() < 1e-4
            assert np.abs(1 / (1 + np.exp(-masks)) - expected_masks[0].sigmoid().numpy()).max() < 1e-4
            out = eov_seg_postprocess(logprobs, masks, size, size, vocabulary.isthing, metadata)
            assert_same_panoptic(out, model([{"image": image}])[0])
            segments += len(out["panoptic_seg"][1])
    assert segments >= 4
    assert max(eov_export["check"].values()) < 1e-4


def test_eov_seg_numpy_postprocessing_equals_pytorch():
    """The NumPy functions against PyTorch's on the same head outputs, with a resize to another
    output size (as for an image resized before the model)."""
    torch.manual_seed(0)
    logprobs = torch.randn(12, 6).mul(3).log_softmax(-1)
    masks = F.interpolate(torch.randn(1, 12, 10, 12).mul(4), size=(64, 96), mode="bilinear")[0]
    isthing = torch.tensor([True, True, False, True, False])
    metadata = {"semantic_on": True, "panoptic_on": True, "instance_on": True, "object_mask_threshold": 0.2,
                "overlap_threshold": 0.8, "detections_per_image": 10, "sem_seg_postprocess_before_inference": False}
    for size, output in [((64, 90), (64, 90)), ((60, 90), (83, 125)), ((64, 96), (40, 51))]:
        resized = torch_inference.crop_and_resize(masks, size, *output)
        expected = {
            "sem_seg": torch_inference.semantic_inference(logprobs, resized),
            "panoptic_seg": torch_inference.panoptic_inference(logprobs, resized, isthing, object_mask_threshold=0.2,
                                                               overlap_threshold=0.8),
            "instances": torch_inference.instance_inference(logprobs, resized, isthing, max_detections=10,
                                                            things_only=True),
        }
        out = eov_seg_postprocess(logprobs.numpy(), masks.numpy(), size, output, isthing.numpy(), metadata)
        assert out["sem_seg"].shape == (5, *output)
        assert_same_panoptic(out, expected)
    semantic_only = eov_seg_postprocess(logprobs.numpy(), masks.numpy(), (60, 90), (83, 125), isthing.numpy(),
                                        metadata, panoptic_on=False, instance_on=False)
    reference = torch_inference.crop_and_resize(torch_inference.semantic_inference(logprobs, masks), (60, 90), 83, 125)
    assert set(semantic_only) == {"sem_seg"} and np.abs(semantic_only["sem_seg"] - reference.numpy()).max() < 1e-5


@pytest.mark.parametrize("threshold", [-1.0, 0.7])  # every proposal kept; some dropped
@pytest.mark.parametrize("threads", [1, 2])
def test_eov_seg_numpy_panoptic_in_bands_on_threads_equals_pytorch(monkeypatch, threshold, threads):
    """Bands of 3 rows (the last one shorter) on one or two threads, masks with ties: the NumPy
    id map and segments equal PyTorch's."""
    monkeypatch.setattr(torch_inference, "PANOPTIC_ELEMENTS_PER_BAND", 3 * 17 * 12)
    torch.manual_seed(0)
    logits = torch.randn(12, 5) * 3
    logits[:, -1] = -10  # void never wins
    masks = (F.interpolate(torch.randn(1, 12, 4, 3), size=(23, 17), mode="bilinear")[0] * 4).round()
    isthing = torch.tensor([True, False, True, False])
    kept = int((logits.softmax(-1).max(-1).values > threshold).sum())
    assert kept == 12 if threshold < 0 else 0 < kept < 12
    expected_ids, expected_info = torch_inference.panoptic_inference(
        logits, masks, isthing, object_mask_threshold=threshold, overlap_threshold=0.3)
    ids, info = panoptic_inference(logits.numpy(), masks.numpy(), isthing.numpy(), object_mask_threshold=threshold,
                                   overlap_threshold=0.3, threads=threads)
    assert len(info) > 1 and info == expected_info
    assert np.array_equal(ids, expected_ids.numpy())


# --- a random tiny config through the command line --------------------------------------------

EOV_TINY = str(ROOT / "configs" / "eov_seg" / "synthetic_tiny.yaml")


@pytest.fixture(scope="module")
def tiny_cli_export(tmp_path_factory):
    """configs/eov_seg/synthetic_tiny.yaml (ResNet and ViT CLIPs) with random weights, through
    tools/export.py: image side with dynamic shapes and the text tower."""
    out = tmp_path_factory.mktemp("tiny_cli")
    torch.manual_seed(0)
    weights = out / "random.pth"
    torch.save({"model": build_model(load_config(EOV_TINY, opts=["MODEL.EOV_SEG.TEXT_CACHE_DIR", ""])).state_dict()},
               weights)
    result = subprocess.run(
        [sys.executable, "tools/export.py", "--config-file", EOV_TINY, "--dynamic", "--output", str(out / "m.onnx"),
         "--text-encoder", str(out / "text.onnx"), "--opts", "MODEL.WEIGHTS", str(weights)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert max(max(r.values()) for r in report.values()) < 1e-4
    return {"dir": out, "weights": weights}


@pytest.mark.slow
@torch.no_grad()
def test_tiny_config_end_to_end_equals_the_predictor(tiny_cli_export):
    """From uint8 images (resized by the model's test resize, outputs at the original size) to
    panoptic id maps: the exported files run by onnxruntime give the PyTorch predictor's."""
    out = tiny_cli_export["dir"]
    exported = ExportedModel(str(out / "m.onnx"), text_encoder=str(out / "text.onnx"))
    predictor = SEDPredictor.from_config_file(EOV_TINY, weights=str(tiny_cli_export["weights"]),
                                              opts=["MODEL.EOV_SEG.TEXT_CACHE_DIR", ""])
    for spec in (["red circle:thing", "sky", "grass"],
                 ["yellow star:thing", "grass", "blue triangle, blue shape:thing", "sky", "red circle:thing",
                  "green square:thing", "water"]):
        embeddings = exported.embed(spec)
        names = list(exported.vocabulary(spec).names)
        assert np.abs(embeddings - predictor.model.text_embeddings(names).numpy()).max() < 1e-5
        for image in images("EOV_SEG"):
            result, out = predictor(hwc(image), spec), exported(hwc(image), spec, embeddings)
            assert np.abs(out["sem_seg"] - result.probabilities.numpy()).max() < 1e-4
            assert np.array_equal(out["panoptic_seg"][0], result.panoptic.ids)
            classes = [s.category_id for s in result.panoptic.segments]
            assert [s["category_id"] for s in out["panoptic_seg"][1]] == classes
            assert np.array_equal(out["instances"]["pred_classes"], result.instances.pred_classes.numpy())


@pytest.mark.slow
def test_benchmark_times_onnxruntime_against_pytorch(tiny_cli_export, tmp_path):
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", EOV_TINY, "--vocabulary", "4", "--image-size", "64",
         "96", "--device", "cpu", "--warmup", "0", "--iters", "2", "--no-flops", "--random-text-embeddings",
         "--onnx", str(tiny_cli_export["dir"] / "m.onnx"), "--output", str(output),
         "--opts", "MODEL.WEIGHTS", str(tiny_cli_export["weights"]), "MODEL.EOV_SEG.TEXT_CACHE_DIR", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(output.read_text())
    ort = figures["onnxruntime"]
    assert figures["interleaved_with_onnxruntime"] and figures["ms_per_image"]["median"] > 0
    assert ort["ms_per_image"]["median"] > 0 and ort["providers"] == ["CPUExecutionProvider"]
    assert set(ort["ms_per_image"]) == set(figures["ms_per_image"]) and ort["images_per_s"] > 0
    assert ort["max_abs_difference_sem_seg"] < 1e-4 and ort["panoptic_ids_equal_share"] == 1.0


# --- what cannot be exported is named -----------------------------------------------------------


class DataDependent(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


class Median(nn.Module):
    def forward(self, x):
        return x - x.kthvalue(2, dim=1, keepdim=True).values


class BFloat16Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3).bfloat16()

    def forward(self, x):
        return self.conv(x.bfloat16()).float()


def test_untraceable_module_is_named():
    model = tiny_model("MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1,1]")
    model.cost_map.embed = nn.Sequential(DataDependent(), model.cost_map.embed)
    with pytest.raises(ExportError) as error:
        export_image_side(model, load_config(str(ROOT / "configs" / "synthetic_tiny.yaml")), "unused.onnx",
                          height=64, width=64)
    message = str(error.value)
    assert "cost_map.embed.0 (DataDependent)" in message and "test_export.py" in message and "forward" in message


def test_operator_without_onnx_translation_is_named():
    graph = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sequential(nn.ReLU(), Median()))
    program = trace(graph, (torch.randn(1, 3, 8, 8),), None)
    with pytest.raises(ExportError) as error:
        to_onnx(program, ["x"], ["y"])
    assert "aten.kthvalue" in str(error.value) and "1.1 (Median)" in str(error.value)


def test_operator_onnxruntime_cannot_run_is_named(tmp_path):
    graph = nn.Sequential(nn.ReLU(), BFloat16Conv())
    save(to_onnx(trace(graph, (torch.randn(1, 3, 8, 8),), None), ["x"], ["y"]), tmp_path / "bf16.onnx", {})
    with pytest.raises(ExportError) as error:
        checked_session(tmp_path / "bf16.onnx")
    assert "operator Conv" in str(error.value) and "module 1.conv" in str(error.value)


def test_reduced_precision_config_stops_with_how_to_export(tmp_path):
    result = subprocess.run(
        [sys.executable, "tools/export.py", "--config-file", str(ROOT / "configs" / "synthetic_tiny.yaml"),
         "--output", str(tmp_path / "m.onnx"), "--opts", "TEST.PRECISION", "bfloat16",
         "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "TEST.PRECISION bfloat16" in result.stderr and "TEST.PRECISION float32" in result.stderr
    assert not (tmp_path / "m.onnx").exists()
