"""tools/benchmark.py with an EOV-Seg config (tiny CLIPs), and EOV-Seg's reduced-precision
inference (TEST.PRECISION)."""
import json
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

from helpers import ROOT
from sed.modeling.eov_seg.text_classifier import TextClassifier, names_index
from sed.predictor import load_config
from sed.resources import vocabulary_path

EOV_TINY = str(ROOT / "configs" / "eov_seg" / "synthetic_tiny.yaml")
NO_CACHE = ["MODEL.EOV_SEG.TEXT_CACHE_DIR", ""]


@pytest.mark.slow
def test_benchmark_measures_eov_seg(tmp_path):
    out = tmp_path / "eov.json"
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", EOV_TINY, "--vocabulary", "coco_panoptic",
         "--image-size", "64", "85", "--warmup", "0", "--iters", "2", "--batch-size", "2", "--dtype", "bfloat16",
         "--output", str(out), "--opts", *NO_CACHE],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["model"] == "EOV_SEG" and figures["classes"] == 133 and figures["image_size"] == [64, 85]
    assert figures["batch_size"] == 2 and "classes_kept" not in figures and figures["text_embedding_s"] > 0
    assert 0 < figures["ms_per_image"]["p10"] <= figures["ms_per_image"]["median"] <= figures["ms_per_image"]["p90"]
    assert 0 <= figures["argmax_agreement_vs_float32"] <= 1 and 0 <= figures["panoptic_class_agreement_vs_float32"] <= 1
    assert figures["gflops_per_image"] > 0 and figures["peak_memory_mb"] > 0
    # Inference reads every parameter but those of the CNN CLIP's text tower (its embeddings are
    # cached) and the classification parts of the decoder's earlier stages (only the last one
    # classifies at inference); the ResNet CLIP's folded copy counts as reading its weights.
    model = build_model(load_config(EOV_TINY, opts=NO_CACHE))
    clip = model.cnn_backbone.clip_model
    text_tower = sum(p.numel() for n, p in clip.named_parameters() if not n.startswith("visual.") and n != "logit_scale")
    classify_only = {"_mask_pooling_proj", "_spatial_mask_pooling_proj", "tdee", "class_embed", "logit_scale"}
    early_classifiers = sum(p.numel() for stage in model.light_weight_decoder.mask_heads[:-1]
                            for n, p in stage.named_parameters() if n.split(".")[0] in classify_only)
    assert early_classifiers > 0
    assert figures["parameters"] == sum(p.numel() for p in model.parameters())
    assert figures["parameters_run"] == figures["parameters"] - text_tower - early_classifiers


def test_benchmark_refuses_sed_only_flags_with_eov_seg():
    result = subprocess.run([sys.executable, "tools/benchmark.py", "--config-file", EOV_TINY, "--fast"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "early rejection" in result.stderr


@pytest.mark.slow
def test_benchmark_measures_eov_seg_training_steps(tmp_path):
    """The training loop's step at the config's LSJ crop, float16 with the gradient scaler."""
    out = tmp_path / "train.json"
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", EOV_TINY, "--train", "--dtype", "float16",
         "--warmup", "0", "--iters", "2", "--output", str(out), "--opts", "INPUT.IMAGE_SIZE", "64", *NO_CACHE],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["mode"] == "train" and figures["image_size"] == [64, 64] and figures["amp_grad_scaler"]
    assert figures["classes"] == len(json.loads(vocabulary_path("eov_synthetic.json").read_text()))
    assert figures["iterations_per_s"] > 0 and figures["peak_memory_mb_first_step"] > 0


def test_class_logits_stay_float32_under_autocast():
    torch.manual_seed(0)
    names = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    classifier = TextClassifier(names, torch.randn(1, 16), names_index([2, 1, 2]))
    embeddings, scale = torch.randn(3, 7, 16), torch.tensor(4.6)
    full = classifier.logits(embeddings, scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reduced = classifier.logits(embeddings.bfloat16(), scale)
    assert reduced.dtype == torch.float32 and full.shape == (3, 7, 4)
    # Only the rounding of the inputs to bfloat16 remains (a cosine moves by < 0.01).
    assert torch.allclose(reduced, full, atol=100 * 0.01)


def test_bfloat16_inference_returns_float32_outputs():
    cfg = load_config(EOV_TINY, opts=[*NO_CACHE, "TEST.PRECISION", "bfloat16", "MODEL.EOV_SEG.TEST.PANOPTIC_ON", "True"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.inference_dtype == torch.bfloat16
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)}])[0]
    assert out["sem_seg"].dtype == torch.float32 and out["sem_seg"].shape[-2:] == (64, 80)
    assert torch.isfinite(out["sem_seg"]).all() and out["panoptic_seg"][0].shape == (64, 80)
