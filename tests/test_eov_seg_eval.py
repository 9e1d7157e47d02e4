"""eval.sh with an EOV-Seg config on a miniature ADE20K-150 panoptic split in the documented
layout: the PQ it reports equals an independent computation from the model's own saved
predictions, and AP and mIoU come with it; killed part-way, the evaluation resumes to the
same results and files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from helpers import ROOT, kill_when, straightforward_pq
from sed.data.synthetic import make_panoptic_sample
from sed.family import get_family
from sed.resources import vocabulary_path
from sed.vocabulary import load_vocabulary

pytestmark = pytest.mark.slow

CONFIG = "configs/eov_seg/synthetic_tiny.yaml"
# The generated classes (red circle, blue triangle, yellow star, sky, grass) as ADE-150 ids:
# person, car, bed (things), sky, grass (stuff).
ADE_ID = [12, 20, 7, 2, 9]
ADE150 = load_vocabulary(str(vocabulary_path("eov_seg/ade20k_150.json")))
CATEGORIES = [{"id": i, "name": name.split(",")[0], "isthing": int(thing)}
              for i, (name, thing) in enumerate(zip(ADE150.names, ADE150.isthing))]
VOCABULARY = ["MODEL.EOV_SEG.NUM_CLASSES", "150", "MODEL.EOV_SEG.TRAIN_CLASS_JSON", "datasets/eov_seg/ade20k_150.json",
              "MODEL.EOV_SEG.TEST_CLASS_JSON", "datasets/eov_seg/ade20k_150.json"]


def write_ade_split(root, split, folder, count, seed):
    """Images, semantic labels, panoptic PNG + JSON and instance JSON of one split, as
    datasets/prepare_ade20k_panoptic.py writes them; returns the GT maps and segments."""
    base = root / "ADEChallengeData2016"
    for folder_path in (base / "images" / folder, base / "annotations_detectron2" / folder, base / f"ade20k_panoptic_{split}"):
        folder_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations, instances, maps, segments_of = [], [], [], [], []
    for i in range(count):
        image, ids, segments = make_panoptic_sample(rng, 96)
        ids[:4] = 0  # a VOID band
        stem = f"ADE_{split}_{i:08d}"
        Image.fromarray(image).save(base / "images" / folder / f"{stem}.jpg", quality=95)
        semantic = np.full(ids.shape, 255, np.uint8)
        info, gt = [], []
        for s in segments:
            mask = ids == s["id"]
            category = ADE_ID[s["category_id"]]
            semantic[mask] = category
            ys, xs = np.nonzero(mask)
            info.append({"id": s["id"], "category_id": category, "iscrowd": 0, "area": int(mask.sum()),
                         "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]})
            gt.append((s["id"], category, 0))
            if ADE150.isthing[category]:
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                instances.append({"id": len(instances) + 1, "image_id": stem, "category_id": category, "iscrowd": 0,
                                  "segmentation": dict(rle, counts=rle["counts"].decode()),
                                  "area": int(mask.sum()), "bbox": info[-1]["bbox"]})
        Image.fromarray(semantic).save(base / "annotations_detectron2" / folder / f"{stem}.png")
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(base / f"ade20k_panoptic_{split}" / f"{stem}.png")
        images.append({"id": stem, "file_name": f"{stem}.jpg", "width": 96, "height": 96})
        annotations.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": info})
        maps.append(ids)
        segments_of.append(gt)
    (base / f"ade20k_panoptic_{split}.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": CATEGORIES}))
    things = [c for c in CATEGORIES if c["isthing"]]
    (base / f"ade20k_instance_{split}.json").write_text(json.dumps(
        {"images": images, "annotations": instances, "categories": things}))
    return maps, segments_of


def read_predictions(folder):
    """The panoptic predictions the evaluator saved: id maps and (id, dataset category)."""
    saved = json.loads((folder / "panoptic_predictions.json").read_text())
    by_image = {}
    for annotation in saved["annotations"]:
        rgb = np.array(Image.open(folder / "panoptic_predictions" / annotation["file_name"])).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        by_image[annotation["image_id"]] = (ids, [(s["id"], s["category_id"]) for s in annotation["segments_info"]])
    return by_image


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny EOV-Seg trained on a miniature ADE20K-150 panoptic split, and eval.sh's run of it:
    (folder, environment, overrides common to every run, weights, eval.sh's stdout, GT maps
    and segments of the val split)."""
    tmp_path = tmp_path_factory.mktemp("eov_eval")
    root = tmp_path / "datasets"
    write_ade_split(root, "train", "training", 8, seed=1)
    gt_maps, gt_segments = write_ade_split(root, "val", "validation", 4, seed=2)
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), HOME=str(tmp_path))
    common = ["INPUT.IMAGE_SIZE", "96", "INPUT.MIN_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0",
              "MODEL.EOV_SEG.TEXT_CACHE_DIR", str(tmp_path / "text"), *VOCABULARY]
    train = subprocess.run(
        ["sh", "run.sh", CONFIG, "0", str(tmp_path / "train"), *common, "DATASETS.TRAIN", "('openvocab_ade20k_panoptic_train',)",
         "DATASETS.TEST", "('openvocab_ade20k_panoptic_val',)",
         "SOLVER.MAX_ITER", "150", "SOLVER.STEPS", "(140,)", "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1000"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    weights = tmp_path / "train" / "model_final.pth"
    result = subprocess.run(["sh", "eval.sh", CONFIG, "0", str(tmp_path / "eval"), "MODEL.WEIGHTS", str(weights), *common],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path, env, common, weights, result.stdout, gt_maps, gt_segments


def test_eval_sh_reports_pq_ap_miou_matching_an_independent_computation(evaluated):
    tmp_path, _, _, _, stdout, gt_maps, gt_segments = evaluated
    out = tmp_path / "eval"
    table = stdout[stdout.index("| benchmark"):]
    for name in ("A-847", "PC-459", "PC-59", "PAS-20"):
        assert "missing" in next(line for line in table.splitlines() if line.startswith(f"| {name} "))

    reported = json.loads((out / "eval" / "ADE-150-panoptic" / "results.json").read_text())["openvocab_ade20k_panoptic_val"]
    assert {"panoptic_seg", "segm", "sem_seg"} <= set(reported)
    predictions = read_predictions(out / "eval" / "ADE-150-panoptic" / "inference" / "openvocab_ade20k_panoptic_val")
    stems = [f"ADE_val_{i:08d}" for i in range(4)]
    pred_maps = [predictions[s][0] for s in stems]
    pred_segments = [predictions[s][1] for s in stems]
    expected = straightforward_pq(gt_maps, gt_segments, pred_maps, pred_segments, categories=CATEGORIES)
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert reported["panoptic_seg"][key] == pytest.approx(100 * expected[key], abs=1e-6), key
    row = next(line for line in table.splitlines() if line.startswith("| ADE-150-panoptic "))
    assert f"{reported['panoptic_seg']['PQ']:.2f}".rstrip("0").rstrip(".") in row
    a150 = next(line for line in table.splitlines() if line.startswith("| A-150 "))
    assert "missing" not in a150 and "failed" not in a150


def test_panoptic_evaluation_killed_then_resumed_equals_the_uninterrupted_one(evaluated):
    """kill -9 part-way through ADE-150-panoptic (PQ, AP, mIoU), then the same command: it
    evaluates only the images it had not saved, and reports, and writes, what eval.sh's
    uninterrupted run did."""
    tmp_path, env, common, weights, _, _, _ = evaluated
    benchmark = next(b for b in get_family("EOV_SEG").published if b.name == "ADE-150-panoptic")
    out = tmp_path / "resumed"
    inference = out / "inference" / benchmark.dataset
    cmd = [sys.executable, "train_net.py", "--config-file", CONFIG, "--eval-only", "OUTPUT_DIR", str(out),
           "MODEL.DEVICE", "cpu", "DATASETS.TEST", f"('{benchmark.dataset}',)", *benchmark.overrides,
           "MODEL.WEIGHTS", str(weights), *common, "TEST.PARTIAL_EVERY", "1"]
    kill_when(cmd, env, lambda: len(list((inference / "partial").glob("*.chunk"))) >= 1)
    assert not (out / "results.json").exists()
    saved = len(list((inference / "partial").glob("*.chunk")))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"{saved} of 4 images done" in log and f"Start inference on {4 - saved} batches" in log
    assert not (inference / "partial").exists()
    clean = tmp_path / "eval" / "eval" / benchmark.name
    assert json.loads((out / "results.json").read_text()) == json.loads((clean / "results.json").read_text())
    clean_inference = clean / "inference" / benchmark.dataset
    assert read_predictions(inference).keys() == read_predictions(clean_inference).keys()
    for name in ["panoptic_predictions.json", "coco_instances_results.json",
                 *(f"panoptic_predictions/{p.name}" for p in (clean_inference / "panoptic_predictions").iterdir())]:
        assert (inference / name).read_bytes() == (clean_inference / name).read_bytes(), name
