"""tools/demo.py, the Python predictor API and tools/benchmark.py with a tiny model."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import ROOT, TINY_TEXT as TINY
from sed.resources import vocabulary_path


def demo(*args):
    return subprocess.run([sys.executable, "tools/demo.py", "--config-file", "configs/synthetic_tiny.yaml", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_demo_writes_every_output(tmp_path, weights):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(90, 120), (130, 100)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inputs / f"img{i}.jpg")
    (inputs / "broken.png").write_bytes(b"not an image")
    (tmp_path / "classes.txt").write_text("red circle\ngreen square, lawn\nsky\n")
    out = tmp_path / "out"
    result = demo("--input", str(inputs), str(tmp_path / "nothing*.jpg"), "--output", str(out),
                  "--vocabulary", str(tmp_path / "classes.txt"), "--batch-size", "2", "--save-probabilities",
                  "--opts", "MODEL.WEIGHTS", str(weights), *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipping" in result.stderr and "broken.png" in result.stderr
    assert "No input matches" in result.stderr
    for i, (h, w) in enumerate([(90, 120), (130, 100)]):
        labels = np.array(Image.open(out / f"img{i}_labels.png"))
        assert labels.shape == (h, w) and labels.max() < 3
        assert json.loads((out / f"img{i}_classes.json").read_text()) == {"0": "red circle", "1": "green square, lawn", "2": "sky"}
        probs = np.load(out / f"img{i}_probs.npy")
        assert probs.shape == (3, h, w) and np.array_equal(probs.astype(np.float32).argmax(0), labels)
        overlay = np.array(Image.open(out / f"img{i}_overlay.png"))
        assert overlay.shape[0] == h and overlay.shape[1] > w  # the legend panel is on the right
        legend = overlay[:, w:]
        assert (legend == 255).mean() > 0.5 and (legend < 128).any()  # white panel with swatches and text
    assert not list(out.glob("broken*"))


@pytest.mark.slow
def test_demo_refuses_bad_input(tmp_path, weights):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    result = demo("--input", str(tmp_path), "--output", str(tmp_path / "o"), "--vocabulary", str(empty))
    assert result.returncode == 2 and "vocabulary is empty" in result.stderr
    result = demo("--input", str(tmp_path / "missing.jpg"), "--output", str(tmp_path / "o"), "--vocabulary", "voc20")
    assert result.returncode == 2 and "no input files found" in result.stderr


@pytest.mark.slow
def test_predictor_swaps_vocabularies_without_rebuilding(weights):
    from sed import SEDPredictor

    predictor = SEDPredictor.from_config_file(str(ROOT / "configs" / "synthetic_tiny.yaml"), weights=str(weights), opts=TINY)
    model = predictor.model
    image = np.random.default_rng(1).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    first = predictor(image, ["red circle", "sky", "grass"])
    second = predictor(image, "voc20")
    assert predictor.model is model
    assert first.probabilities.shape == (3, 100, 140) and second.probabilities.shape == (20, 100, 140)
    assert second.class_names[0] == "aeroplane" and first.labels.max() < 3
    again = predictor(image, ["red circle", "sky", "grass"])
    assert torch.equal(again.probabilities, first.probabilities)
    swapped = predictor(image, ["grass", "sky", "red circle"])
    assert torch.allclose(swapped.probabilities.flip(0), first.probabilities, atol=1e-5)


@pytest.mark.slow
def test_predictor_call_options_hold_for_one_call(weights, monkeypatch):
    from sed import SEDPredictor

    config = str(ROOT / "configs" / "synthetic_tiny.yaml")
    plain = SEDPredictor.from_config_file(config, weights=str(weights), opts=TINY)
    fast = SEDPredictor.from_config_file(config, weights=str(weights),
                                         opts=[*TINY, "TEST.FAST_INFERENCE", "True", "TEST.TOPK", "1"])
    image = np.random.default_rng(2).integers(0, 256, (90, 110, 3), dtype=np.uint8)
    names = ["red circle", "green square", "blue triangle", "sky", "grass"]
    topks, forward_fast = [], plain.model.decoder.forward_fast
    monkeypatch.setattr(plain.model.decoder, "forward_fast", lambda *args: topks.append(args[-1]) or forward_fast(*args))
    once = plain(image, names, {"TEST.FAST_INFERENCE": True, "TEST.TOPK": 1})
    assert topks == [1] and torch.equal(once.probabilities, fast(image, names).probabilities)
    plain(image, names)
    assert topks == [1] and plain.model.fast_inference is False and plain.model.topk == 8  # for that call only
    with pytest.raises(ValueError, match="TEST.TOPK takes int values, not 1.5"):
        plain(image, names, {"TEST.TOPK": 1.5})
    with pytest.raises(ValueError, match="MODEL.EOV_SEG.TEST.OVERLAP_THRESHOLD: not an option of a SED call"):
        plain(image, names, {"MODEL.EOV_SEG.TEST.OVERLAP_THRESHOLD": 0.5})
    assert plain.default_vocabulary.names == tuple(json.loads(vocabulary_path("synthetic.json").read_text()))


@pytest.mark.slow
def test_benchmark_writes_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", "configs/synthetic_tiny.yaml", "--vocabulary", "12",
         "--image-size", "128", "--warmup", "1", "--iters", "2", "--fast", "--topk", "2", "--output", str(out),
         "--random-text-embeddings",
         "--opts", *TINY], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures == json.loads(result.stdout[result.stdout.index("{"):])
    assert figures["classes"] == 12 and figures["device"] == "cpu" and figures["fast_inference"]
    assert figures["random_text_embeddings"]
    assert 0 < figures["ms_per_image"]["p10"] <= figures["ms_per_image"]["median"] <= figures["ms_per_image"]["p90"]
    assert figures["gflops_per_image"] > 0 and figures["peak_memory_mb"] > 0 and 1 <= figures["classes_kept"] <= 12
    assert figures["parameters"] == 2_509_445 and figures["versions"]["torch"] == torch.__version__  # 1 template
    assert 0 < figures["parameters_run"] < figures["parameters"]  # the text tower is not run


@pytest.mark.slow
def test_benchmark_early_rejection_curve(tmp_path):
    out, plot = tmp_path / "curve.json", tmp_path / "curve.png"
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", "configs/synthetic_tiny.yaml", "--vocabulary", "12",
         "--image-size", "128", "--warmup", "0", "--iters", "1", "--fast", "--ranked-rejection", "--topk", "2", "5",
         "--random-text-embeddings", "--output", str(out), "--plot", str(plot), "--opts", *TINY],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    curve = json.loads(out.read_text())["curve"]
    assert [(p["topk"], p["classes_kept"]) for p in curve] == [(None, 12), (2, 2), (5, 5)]
    assert all(p["ms_per_image"]["median"] > 0 for p in curve)
    assert Image.open(plot).size[0] > 0
    refused = subprocess.run([sys.executable, "tools/benchmark.py", "--config-file", "configs/synthetic_tiny.yaml",
                              "--topk", "2", "5"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "add --fast" in refused.stderr


@pytest.mark.slow
def test_benchmark_reduced_precision_reports_its_agreement(tmp_path):
    out = tmp_path / "bf16.json"
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", "configs/synthetic_tiny.yaml", "--vocabulary", "6",
         "--image-size", "96", "--warmup", "0", "--iters", "1", "--dtype", "bfloat16", "--no-flops",
         "--random-text-embeddings", "--output", str(out), "--opts", *TINY],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["dtype"] == "bfloat16" and 0 < figures["argmax_agreement_vs_float32"] <= 1
    assert 0 < figures["max_probability_change_vs_float32"] < 0.1
    assert figures["float32_top2_margin_median"] >= 0


def test_benchmark_text_only(tmp_path):
    out, vocabulary = tmp_path / "text.json", tmp_path / "vocabulary.json"
    vocabulary.write_text(json.dumps(["cat, kitty", "sky", "road, street, lane"]))
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", "configs/synthetic_tiny.yaml", "--vocabulary",
         str(vocabulary), "--text-only", "--output", str(out), "--opts", *TINY],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["mode"] == "text" and figures["prompts"] == 6  # one template x (2 + 1 + 3) names
    assert figures["prompts_per_s"] > 0 and "ms_per_image" not in figures


@pytest.mark.slow
def test_benchmark_train_mode(tmp_path):
    out = tmp_path / "train.json"
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--config-file", "configs/synthetic_tiny.yaml", "--vocabulary", "5",
         "--train", "--batch-size", "2", "--warmup", "1", "--iters", "2", "--output", str(out), "--opts", *TINY],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["mode"] == "train" and figures["iterations_per_s"] > 0 and figures["image_size"] == [128, 128]
    assert 0 < figures["peak_memory_mb_first_step"] <= figures["peak_memory_mb"]
    assert figures["train_checkpoint_chunks"] is True  # the default


@pytest.mark.slow
def test_demo_segments_every_frame_of_a_video(tmp_path, weights):
    import cv2

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (96, 64))
    for i in range(3):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    result = demo("--input", str(video), "--output", str(out), "--vocabulary", "red circle", "sky",
                  "--opts", "MODEL.WEIGHTS", str(weights), *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.glob("clip_*_labels.png")) == [f"clip_00000{i}_labels.png" for i in range(3)]
    assert np.array(Image.open(out / "clip_000002_labels.png")).shape == (64, 96)
    capture = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert capture.get(cv2.CAP_PROP_FPS) == 5.0  # the source's frame rate
