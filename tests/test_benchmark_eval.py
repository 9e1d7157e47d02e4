"""eval.sh on miniature copies of every benchmark in its exact on-disk layout, checked
against an independent computation, distributed evaluation (2 CPU processes), and eval.sh
killed and run again."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image
from pycocotools import mask as mask_utils

from helpers import ROOT, kill_when, make_cfg

pytestmark = pytest.mark.slow

# benchmark -> (image dir, label dir, label extension, classes, ignore value, evaluated classes)
LAYOUT = {
    "A-847": ("ADE20K_2021_17_01/images_detectron2/validation", "ADE20K_2021_17_01/annotations_detectron2/validation", "tif", 847, 65535, 847),
    "PC-459": ("VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc459_val", "tif", 459, 459, 459),
    "A-150": ("ADEChallengeData2016/images/validation", "ADEChallengeData2016/annotations_detectron2/validation", "png", 150, 255, 150),
    "PC-59": ("VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc59_val", "png", 59, 255, 59),
    "PAS-20": ("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/annotations_detectron2/val", "png", 20, 255, 20),
    "PAS-20b": ("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/annotations_detectron2_bg/val", "png", 21, 255, 21),
}
DATASET = {"A-847": "ade20k_full_sem_seg_freq_val_all", "PC-459": "context_459_test_sem_seg",
           "A-150": "ade20k_150_test_sem_seg", "PC-59": "context_59_test_sem_seg",
           "PAS-20": "voc_2012_test_sem_seg", "PAS-20b": "voc_2012_test_background_sem_seg"}


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    """Every benchmark with 3 small images (the VOC sets share theirs), and tiny weights."""
    root = tmp_path_factory.mktemp("benchmarks")
    rng = np.random.default_rng(0)
    for name, (image_dir, label_dir, ext, classes, ignore, _) in LAYOUT.items():
        for i in range(3):
            stem = f"2008_00000{i}"
            h, w = 60 + 10 * i, 80
            image_path = root / image_dir / f"{stem}.jpg"
            if not image_path.exists():
                image_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(image_path)
            label = rng.integers(0, min(classes, 6), (h, w))
            label[:5] = ignore
            (root / label_dir).mkdir(parents=True, exist_ok=True)
            dtype = np.uint16 if ext == "tif" else np.uint8
            Image.fromarray(label.astype(dtype)).save(root / label_dir / f"{stem}.{ext}")
    torch.manual_seed(0)
    cfg = make_cfg("MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "", "MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single",
                   config_file=ROOT / "configs" / "synthetic_tiny.yaml")
    weights = root / "tiny.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    return root, weights


def env_for(root, tmp_path):
    import os

    return dict(os.environ, DETECTRON2_DATASETS=str(root), HOME=str(tmp_path))


def independent_metrics(results_dir, dataset, label_dir, ext, ignore, num_classes):
    """Confusion-matrix metrics recomputed with numpy from the saved predictions."""
    predictions = json.loads(next(results_dir.rglob("sem_seg_predictions.json")).read_text())
    conf = np.zeros((num_classes, num_classes), np.int64)  # [gt, pred]
    by_file = {}
    for p in predictions:
        by_file.setdefault(p["file_name"], []).append(p)
    for file_name, items in by_file.items():
        stem = file_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        gt = np.array(Image.open(label_dir / f"{stem}.{ext}")).astype(np.int64)
        pred = np.full(gt.shape, -1)
        for item in items:
            rle = dict(item["segmentation"], counts=item["segmentation"]["counts"].encode())
            pred[mask_utils.decode(rle).astype(bool)] = item["category_id"]
        valid = gt != ignore
        np.add.at(conf, (gt[valid], pred[valid]), 1)
    gt_count, pred_count, tp = conf.sum(1), conf.sum(0), np.diag(conf)
    present = gt_count > 0
    iou = tp[present] / (gt_count + pred_count - tp)[present]
    return {"mIoU": 100 * iou.mean(), "mACC": 100 * (tp[present] / gt_count[present]).mean(),
            "pACC": 100 * tp.sum() / gt_count.sum(), "fwIoU": 100 * (iou * gt_count[present]).sum() / gt_count.sum()}


@pytest.fixture(scope="module")
def eval_sh_output(benchmarks, tmp_path_factory):
    """eval.sh on every benchmark (one process each) -> its output folder and stdout."""
    root, weights = benchmarks
    home = tmp_path_factory.mktemp("eval_sh")
    out = home / "out"
    result = subprocess.run(["sh", "eval.sh", "configs/synthetic_tiny.yaml", "0", str(out), "MODEL.WEIGHTS", str(weights),
                             "MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single"],
                            cwd=ROOT, env=env_for(root, home), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_eval_sh_on_every_benchmark(benchmarks, eval_sh_output):
    root, _ = benchmarks
    out, stdout = eval_sh_output
    table = stdout[stdout.index("| benchmark"):]
    for name, (_, label_dir, ext, _, ignore, evaluated) in LAYOUT.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} "))
        metrics = json.loads((out / "eval" / name / "results.json").read_text())[DATASET[name]]["sem_seg"]
        assert sum(1 for k in metrics if k.startswith("IoU-")) == evaluated
        assert f"{metrics['mIoU']:.2f}".rstrip("0").rstrip(".") in row
        expected = independent_metrics(out / "eval" / name, DATASET[name], root / label_dir, ext, ignore, evaluated)
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value, abs=1e-6), (name, key)
    assert "missing" not in table


@pytest.mark.parametrize("benchmark", ["PC-59", "PAS-20b"])
def test_two_processes_give_the_same_metrics(benchmarks, eval_sh_output, tmp_path, benchmark):
    """Two CPU processes report exactly the metrics of eval.sh's single process."""
    root, weights = benchmarks
    out = tmp_path / "p2"
    cmd = [sys.executable, "train_net.py", "--config-file", "configs/synthetic_tiny.yaml", "--eval-only",
           "--num-gpus", "2", "--dist-url", "auto", "OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu",
           "MODEL.WEIGHTS", str(weights), "MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single",
           "DATASETS.TEST", f"('{DATASET[benchmark]}',)", "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1,1]",
           "MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", f"datasets/{'voc20b' if benchmark == 'PAS-20b' else 'pc59'}.json"]
    result = subprocess.run(cmd, cwd=ROOT, env=env_for(root, tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one_process = json.loads((eval_sh_output[0] / "eval" / benchmark / "results.json").read_text())
    assert json.loads((out / "results.json").read_text()) == one_process


def voc2012_only(root, folder, label_dirs):
    """A dataset folder with VOC2012's images and the given label folders of ``root``, linked:
    of the benchmarks, only those reading them are on disk."""
    voc = folder / "VOCdevkit" / "VOC2012"
    voc.mkdir(parents=True)
    for name in ["JPEGImages", *label_dirs]:
        (voc / name).symlink_to(root / "VOCdevkit" / "VOC2012" / name)
    return folder


def table_rows(stdout, names):
    """The cells of the summary table's rows of ``names``."""
    table = stdout[stdout.index("| benchmark"):].splitlines()
    return [[cell.strip() for cell in next(line for line in table if line.startswith(f"| {name} ")).split("|")]
            for name in names]


def test_eval_sh_killed_then_rerun_skips_finished_benchmarks_and_resumes_the_interrupted_one(
        benchmarks, eval_sh_output, tmp_path):
    """PAS-20 and PAS-20b on disk: eval.sh killed part-way through PAS-20b, then the same
    command; then --force."""
    root, weights = benchmarks
    env = env_for(voc2012_only(root, tmp_path / "voc", ["annotations_detectron2", "annotations_detectron2_bg"]),
                  tmp_path)
    out = tmp_path / "out"
    args = ["sh", "eval.sh", "configs/synthetic_tiny.yaml", "0", str(out), "MODEL.WEIGHTS", str(weights),
            "MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single", "TEST.PARTIAL_EVERY", "1"]
    partial = out / "eval" / "PAS-20b" / "inference" / DATASET["PAS-20b"] / "partial"
    kill_when(args, env, lambda: len(list(partial.glob("*.chunk"))) >= 1)
    finished = out / "eval" / "PAS-20" / "results.json"
    assert finished.is_file() and not (out / "eval" / "PAS-20b" / "results.json").exists()
    finished_at, saved = finished.stat().st_mtime_ns, len(list(partial.glob("*.chunk")))

    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (f"eval.sh: PAS-20 (1/2) skipped: {finished} is complete for these weights, config and overrides"
            in result.stdout)
    assert "eval.sh: evaluating PAS-20 " not in result.stdout and finished.stat().st_mtime_ns == finished_at
    assert "eval.sh: evaluating PAS-20b (2/2" in result.stdout
    assert f"{saved} of 3 images done" in result.stdout and f"Start inference on {3 - saved} batches" in result.stdout
    assert not partial.exists()
    names = ["PAS-20", "PAS-20b"]
    assert table_rows(result.stdout, names) == table_rows(eval_sh_output[1], names)
    for name in names:
        clean = json.loads((eval_sh_output[0] / "eval" / name / "results.json").read_text())
        assert json.loads((out / "eval" / name / "results.json").read_text()) == clean

    # --force evaluates a complete benchmark again (only PAS-20 on disk now).
    env = env_for(voc2012_only(root, tmp_path / "voc20", ["annotations_detectron2"]), tmp_path)
    result = subprocess.run(args[:2] + ["--force"] + args[2:], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval.sh: evaluating PAS-20 (1/1" in result.stdout and finished.stat().st_mtime_ns != finished_at
    assert table_rows(result.stdout, names) == table_rows(eval_sh_output[1], names)
