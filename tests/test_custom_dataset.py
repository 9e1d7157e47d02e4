"""Your own dataset: the folder checks (every problem named with its file), registration by
path with metadata and the model's vocabulary following it, tools/check_dataset.py, and
evaluation and fine-tuning of SED and EOV-Seg on generated custom folders (run.sh, eval.sh)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from panopticapi.utils import rgb2id
from PIL import Image

from helpers import ROOT, eov_cfg, make_cfg
from sed import engine
from sed.data import custom
from sed.data.custom import CustomDatasetError, check_dataset, checked_split, resolve_custom_datasets
from sed.data.custom_example import write_examples
from sed.resources import vocabulary_path

SED_CONFIG = "configs/synthetic_tiny.yaml"
EOV_CONFIG = "configs/eov_seg/synthetic_tiny.yaml"
SED_FAST = ["SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "4", "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.CROP.SIZE", "(64,64)", "INPUT.MIN_SIZE_TEST", "64",
            "DATALOADER.NUM_WORKERS", "0", "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", ""]
EOV_FAST = ["SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "4", "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.IMAGE_SIZE", "96", "INPUT.MIN_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0",
            "MODEL.EOV_SEG.TEXT_CACHE_DIR", ""]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """The worked example's folders, small: shapes (semantic, 3 classes) and shapes_panoptic (4)."""
    out = tmp_path_factory.mktemp("custom")
    write_examples(str(out), size=64, splits={"train": 6, "val": 3})
    return out


@pytest.fixture(autouse=True)
def check_cache(tmp_path, monkeypatch):
    """Remembered checks stay inside the test."""
    monkeypatch.setattr(custom, "CHECK_CACHE_DIR", str(tmp_path / "checks"))


def copy(examples, tmp_path, name="shapes"):
    folder = tmp_path / name
    shutil.copytree(examples / name, folder)
    return folder


def run(cmd, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


# --- the checks ----------------------------------------------------------------------------------


def write_label(path, values):
    Image.fromarray(np.asarray(values, np.uint8)).save(path)


def set_json(path, update):
    content = json.loads(path.read_text())
    path.write_text(json.dumps(update(content)))


def first_annotation(folder, split="train"):
    return json.loads((folder / split / "panoptic.json").read_text())["annotations"][0]


# (what is broken, how, the file named and the words of the problem); semantic folder
SEMANTIC_PROBLEMS = {
    "image without label": (lambda f: (f / "train/labels/train_00000.png").unlink(),
                            "train/images/train_00000.jpg", "image without label"),
    "label without image": (lambda f: (f / "train/images/train_00001.jpg").unlink(),
                            "train/labels/train_00001.png", "label without image"),
    "value outside the classes": (lambda f: write_label(f / "train/labels/train_00002.png", np.full((64, 64), 7)),
                                  "train/labels/train_00002.png", "value(s) 7 outside the class list"),
    "label size": (lambda f: write_label(f / "val/labels/val_00000.png", np.zeros((32, 64))),
                   "val/labels/val_00000.png", "size 64x32 differs from its image"),
    "unreadable image": (lambda f: (f / "train/images/train_00003.jpg").write_bytes(b"not a jpeg"),
                         "train/images/train_00003.jpg", "unreadable image"),
    "unreadable label": (lambda f: (f / "train/labels/train_00003.png").write_bytes(b"\x89PNG broken"),
                         "train/labels/train_00003.png", "unreadable label map"),
    "colour label": (lambda f: Image.new("RGB", (64, 64)).save(f / "train/labels/train_00004.png"),
                     "train/labels/train_00004.png", "label maps must be single-channel"),
    "duplicated name": (lambda f: shutil.copy(f / "train/images/train_00000.jpg", f / "train/images/train_00000.png"),
                        "train/images/train_00000.png", "duplicated name 'train_00000'"),
    "empty split": (lambda f: (f / "test/images").mkdir(parents=True), "test/images", "empty split"),
    "repeated class": (lambda f: (f / "classes.json").write_text('["background", "disc", "polygon, disc"]'),
                       "classes.json", "class name 'disc' is repeated (classes 1 and 2)"),
    "empty class name": (lambda f: (f / "classes.json").write_text('["background", "circle, ", "polygon"]'),
                         "classes.json", "class 1 ('circle, ') has an empty name"),
    "no class list": (lambda f: (f / "classes.json").unlink(), "classes.json", "is missing"),
    "ignore inside the classes": (lambda f: (f / "dataset.json").write_text('{"ignore_label": 1}'),
                                  "dataset.json", "ignore_label must be a whole number outside the class indices"),
    "no ground truth": (lambda f: shutil.rmtree(f / "val/labels"), "val", "no ground truth"),
}
PANOPTIC_PROBLEMS = {
    "category outside the classes": (
        lambda f: set_json(f / "train/panoptic.json", lambda c: {**c, "annotations": [
            {**a, "segments_info": [{**s, "category_id": 99} for s in a["segments_info"]]} if i == 0 else a
            for i, a in enumerate(c["annotations"])]}),
        "train_00000.png", "category_id 99, not in the categories"),
    "annotation without PNG": (lambda f: (f / "train/panoptic/train_00001.png").unlink(),
                               "train_00001.png", "has no PNG"),
    "image without annotation": (
        lambda f: set_json(f / "val/panoptic.json", lambda c: {**c, "annotations": c["annotations"][1:]}),
        "val/images/val_00000.jpg", "image without label"),
    "segment missing from the JSON": (
        lambda f: set_json(f / "train/panoptic.json", lambda c: {**c, "annotations": [
            {**a, "segments_info": a["segments_info"][1:]} if i == 0 else a for i, a in enumerate(c["annotations"])]}),
        "train/panoptic/train_00000.png", "in the PNG are not in its segments_info"),
    "categories unlike the classes": (
        lambda f: set_json(f / "train/panoptic.json", lambda c: {**c, "categories": c["categories"][:3]}),
        "train/panoptic.json", "3 categories but"),
    "thing flag unlike the classes": (
        lambda f: set_json(f / "train/panoptic.json", lambda c: {**c, "categories": [
            {**k, "isthing": 0} for k in c["categories"]]}),
        "train/panoptic.json", "has isthing 0 but class 0 ('circle, disc')"),
    "panoptic size": (lambda f: Image.new("RGB", (64, 30)).save(f / "val/panoptic/val_00002.png"),
                      "val/panoptic/val_00002.png", "size 64x30 differs from its image"),
    "duplicated annotation": (
        lambda f: set_json(f / "val/panoptic.json", lambda c: {**c, "annotations": c["annotations"] + c["annotations"][:1]}),
        "val/panoptic.json", "duplicated name"),
}


@pytest.mark.parametrize("problem", sorted(SEMANTIC_PROBLEMS))
def test_semantic_problem_is_named_with_its_file(problem, examples, tmp_path):
    folder = copy(examples, tmp_path)
    breaks, path, words = SEMANTIC_PROBLEMS[problem]
    breaks(folder)
    problems = check_dataset(str(folder)).problems
    assert any(str(folder / path) in p and words in p for p in problems), problems


@pytest.mark.parametrize("problem", sorted(PANOPTIC_PROBLEMS))
def test_panoptic_problem_is_named_with_its_file(problem, examples, tmp_path):
    folder = copy(examples, tmp_path, "shapes_panoptic")
    breaks, path, words = PANOPTIC_PROBLEMS[problem]
    breaks(folder)
    problems = check_dataset(str(folder)).problems
    assert any(path in p and words in p for p in problems), problems


def test_generated_folders_have_no_problem(examples):
    for name, classes in (("shapes", 3), ("shapes_panoptic", 4)):
        report = check_dataset(str(examples / name))
        assert report.problems == []
        assert len(report.vocabulary) == classes and set(report.splits) == {"train", "val"}
        assert report.splits["train"].images == 6 and all(report.splits["train"].pixels)


def test_every_problem_is_reported_at_once_and_stops_registration(examples, tmp_path):
    folder = copy(examples, tmp_path)
    for problem in ("image without label", "value outside the classes", "unreadable image"):
        SEMANTIC_PROBLEMS[problem][0](folder)
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (str(folder / "train"),)
    with pytest.raises(CustomDatasetError) as error:
        resolve_custom_datasets(cfg)
    message = str(error.value)
    assert "has 3 problem(s)" in message and f"python tools/check_dataset.py {folder}" in message
    for name in ("images/train_00000.jpg", "labels/train_00002.png", "images/train_00003.jpg"):
        assert str(folder / "train" / name) in message
    assert "custom_shapes_train" not in DatasetCatalog.list()


def test_a_remembered_check_is_redone_when_a_file_changes(examples, tmp_path, monkeypatch):
    folder = copy(examples, tmp_path)
    checked_split(str(folder), "val")
    monkeypatch.setattr(custom, "check_dataset", lambda *a, **k: pytest.fail("checked again"))
    assert checked_split(str(folder), "val").kind == "semantic"
    monkeypatch.undo()
    monkeypatch.setattr(custom, "CHECK_CACHE_DIR", str(tmp_path / "checks"))
    write_label(folder / "val/labels/val_00001.png", np.full((64, 64), 9))
    with pytest.raises(CustomDatasetError, match="val_00001.png: value"):
        checked_split(str(folder), "val")


@pytest.mark.slow
def test_check_tool_prints_the_summary_and_every_problem(examples, tmp_path):
    folder = copy(examples, tmp_path)
    (folder / "classes.json").write_text('["background", "circle, disc", "polygon, angular shape", "hexagon"]')
    result = run([sys.executable, "tools/check_dataset.py", str(folder)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "4 classes, ignore label 255" in result.stdout and "| train   | semantic       |        6 |" in result.stdout
    assert "Classes never present in train: hexagon" in result.stdout
    pixels = [line for line in result.stdout.splitlines() if line.startswith("| background")][0]
    assert float(pixels.split("|")[2]) > 50  # the background's share of labelled pixels, in %
    SEMANTIC_PROBLEMS["label without image"][0](folder)
    SEMANTIC_PROBLEMS["repeated class"][0](folder)
    result = run([sys.executable, "tools/check_dataset.py", str(folder)], tmp_path)
    assert result.returncode == 1
    assert "2 problem(s)" in result.stdout and f"{folder}/train/labels/train_00001.png: label without image" in result.stdout


# --- registration --------------------------------------------------------------------------------


def test_semantic_folder_registers_with_its_metadata(examples, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(examples))
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (str(examples / "shapes" / "train"),)
    cfg.DATASETS.TEST = ("shapes/val", "sed_synthetic_val")  # relative to $DETECTRON2_DATASETS; a benchmark
    train, test = resolve_custom_datasets(cfg)
    assert cfg.DATASETS.TRAIN == ("custom_shapes_train",) and cfg.DATASETS.TEST == ("custom_shapes_val", "sed_synthetic_val")
    assert [s.name for s in train + test] == ["custom_shapes_train", "custom_shapes_val"]
    dicts = DatasetCatalog.get("custom_shapes_val")
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["val_00000.jpg", "val_00001.jpg", "val_00002.jpg"]
    assert dicts[0]["sem_seg_file_name"] == str(examples / "shapes/val/labels/val_00000.png")
    meta = MetadataCatalog.get("custom_shapes_val")
    assert meta.stuff_classes == ["background", "circle, disc", "polygon, angular shape"]
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255 and len(meta.stuff_colors) == 3
    assert meta.vocabulary == str(examples / "shapes" / "classes.json")


def test_panoptic_folder_registers_with_its_metadata(examples):
    cfg = get_cfg()
    cfg.DATASETS.TEST = (str(examples / "shapes_panoptic" / "val") + "/",)
    resolve_custom_datasets(cfg)
    name = "custom_shapes_panoptic_val"
    meta = MetadataCatalog.get(name)
    assert cfg.DATASETS.TEST == (name,) and meta.evaluator_type == "coco_panoptic_seg"
    assert meta.thing_classes == ["circle, disc", "polygon, angular shape"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}
    assert meta.stuff_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3}
    assert meta.panoptic_json == str(examples / "shapes_panoptic/val/panoptic.json")
    d = DatasetCatalog.get(name)[0]
    assert d["file_name"].endswith("val/images/val_00000.jpg") and d["pan_seg_file_name"].endswith("val/panoptic/val_00000.png")
    assert {s["category_id"] for s in d["segments_info"]} >= {2, 3}  # sky and grass, as class indices
    assert all(s["isthing"] == (s["category_id"] < 2) and s["iscrowd"] == 0 for s in d["segments_info"])
    # Semantic ground truth for mIoU, from the panoptic PNG: each segment's class index.
    semantic = meta.sem_seg_loading_fn(d["sem_seg_file_name"], dtype=int)
    ids = rgb2id(np.array(Image.open(d["pan_seg_file_name"]).convert("RGB")).astype(np.int64))
    for s in d["segments_info"]:
        assert (semantic[ids == s["id"]] == s["category_id"]).all()
    assert set(np.unique(semantic)) <= {0, 1, 2, 3, 255}


def test_a_dataset_folder_or_a_missing_path_is_refused_clearly(examples, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    cfg = get_cfg()
    cfg.DATASETS.TEST = (str(examples / "shapes"),)
    with pytest.raises(CustomDatasetError, match=r"is a dataset folder: name one of its split folders .*shapes/train"):
        resolve_custom_datasets(cfg)
    cfg.DATASETS.TEST = ("nowhere/val",)
    with pytest.raises(CustomDatasetError, match=rf"'nowhere/val' not found: no nowhere/val/images or {tmp_path}/nowhere/val/images"):
        resolve_custom_datasets(cfg)


def test_same_folder_name_elsewhere_replaces_the_registration_or_clashes(examples, tmp_path):
    other = copy(examples, tmp_path)
    (other / "val/labels/val_00002.png").unlink()
    (other / "val/images/val_00002.jpg").unlink()
    cfg = get_cfg()
    cfg.DATASETS.TEST = (str(examples / "shapes/val"),)
    resolve_custom_datasets(cfg)
    assert len(DatasetCatalog.get("custom_shapes_val")) == 3
    cfg.DATASETS.TEST = (str(other / "val"),)
    resolve_custom_datasets(cfg)  # a later run naming another folder "shapes"
    assert len(DatasetCatalog.get("custom_shapes_val")) == 2 and MetadataCatalog.get("custom_shapes_val").folder == str(other)
    cfg.DATASETS.TEST = (str(examples / "shapes/val"), str(other / "val"))
    with pytest.raises(CustomDatasetError, match="would both be registered as 'custom_shapes_val': rename one"):
        resolve_custom_datasets(cfg)


def build_cfg(config, *opts):
    return engine.build_cfg(default_argument_parser().parse_args(["--config-file", config, *opts]))


def test_model_vocabulary_follows_the_dataset_unless_given(examples, monkeypatch):
    monkeypatch.chdir(ROOT)
    shapes, panoptic = examples / "shapes", examples / "shapes_panoptic"
    cfg = build_cfg(SED_CONFIG, "DATASETS.TRAIN", f"('{shapes}/train',)", "DATASETS.TEST", f"('{shapes}/val',)")
    head = cfg.MODEL.SEM_SEG_HEAD
    assert head.TRAIN_CLASS_JSON == head.TEST_CLASS_JSON == str(shapes / "classes.json") and head.IGNORE_VALUE == 255
    cfg = build_cfg(SED_CONFIG, "DATASETS.TEST", f"('{shapes}/val',)", "MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", "x.json")
    assert cfg.MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON == "x.json"
    assert cfg.MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON == "datasets/synthetic.json"  # the benchmark's, from the config
    cfg = build_cfg(EOV_CONFIG, "DATASETS.TRAIN", f"('{panoptic}/train',)", "DATASETS.TEST", f"('{shapes}/val',)")
    eov = cfg.MODEL.EOV_SEG
    assert eov.TRAIN_CLASS_JSON == str(panoptic / "classes.json") and eov.NUM_CLASSES == 4
    assert eov.TEST_CLASS_JSON == str(shapes / "classes.json")
    with pytest.raises(CustomDatasetError, match=r"SED segments semantically, but .*shapes_panoptic/val has panoptic"):
        build_cfg(SED_CONFIG, "DATASETS.TEST", f"('{panoptic}/val',)")
    with pytest.raises(CustomDatasetError, match=r"EOV-Seg trains on panoptic ground truth, but .*shapes/train"):
        build_cfg(EOV_CONFIG, "DATASETS.TRAIN", f"('{shapes}/train',)")


def test_eov_seg_checkpoint_of_another_vocabulary_loads_for_fine_tuning(monkeypatch, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    monkeypatch.chdir(ROOT)
    five = build_model(eov_cfg(config_file=ROOT / EOV_CONFIG))
    torch.save({"model": five.state_dict()}, tmp_path / "five.pth")
    twenty = build_model(eov_cfg("MODEL.EOV_SEG.TRAIN_CLASS_JSON", str(vocabulary_path("voc20.json")),
                                 "MODEL.EOV_SEG.NUM_CLASSES", "20", config_file=ROOT / EOV_CONFIG))
    DetectionCheckpointer(twenty).load(str(tmp_path / "five.pth"))  # raises on any other mismatch
    weight = twenty.light_weight_decoder.criterion.empty_weight
    assert weight.shape == (21,) and weight[-1].item() == pytest.approx(0.1) and (weight[:-1] == 1).all()
    assert torch.equal(twenty.void_embedding.weight, five.void_embedding.weight)


# --- evaluation and fine-tuning ------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random-init models of the embedded defaults' configs (5 classes each), standing in for
    released checkpoints trained on another vocabulary."""
    out = tmp_path_factory.mktemp("checkpoints")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        torch.manual_seed(0)
        sed = make_cfg("MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "", config_file=ROOT / SED_CONFIG)
        torch.save({"model": build_model(sed).state_dict()}, out / "sed.pth")
        torch.save({"model": build_model(eov_cfg(config_file=ROOT / EOV_CONFIG)).state_dict()}, out / "eov.pth")
    finally:
        os.chdir(cwd)
    return out


@pytest.mark.slow
def test_sed_fine_tunes_then_evaluates_on_a_custom_folder(examples, checkpoints, tmp_path):
    shapes, out = examples / "shapes", tmp_path / "out"
    result = run(["sh", "run.sh", SED_CONFIG, "0", str(out), "MODEL.WEIGHTS", str(checkpoints / "sed.pth"),
                  "DATASETS.TRAIN", f"('{shapes}/train',)", "DATASETS.TEST", f"('{shapes}/val',)", *SED_FAST], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"Loading from {checkpoints / 'sed.pth'}" in log and "Starting training from iteration 0" in log
    metrics = json.loads((out / "results.json").read_text())["custom_shapes_val"]["sem_seg"]
    assert {"mIoU", "IoU-background", "IoU-circle, disc", "IoU-polygon, angular shape"} <= set(metrics)

    evaluation = tmp_path / "eval"
    result = run(["sh", "eval.sh", SED_CONFIG, "0", str(evaluation), "MODEL.WEIGHTS", str(out / "model_final.pth"),
                  "DATASETS.TEST", f"('{shapes}/val',)", "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1,1]",
                  "INPUT.MIN_SIZE_TEST", "64", "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", ""], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sem_seg results on custom_shapes_val" in result.stdout + result.stderr and "A-847" not in result.stdout
    assert "IoU-polygon, angular shape" in json.loads((evaluation / "results.json").read_text())["custom_shapes_val"]["sem_seg"]


@pytest.mark.slow
def test_eov_seg_fine_tunes_on_a_new_vocabulary_then_evaluates(examples, checkpoints, tmp_path):
    panoptic, out = examples / "shapes_panoptic", tmp_path / "out"
    result = run(["sh", "run.sh", EOV_CONFIG, "0", str(out), "MODEL.WEIGHTS", str(checkpoints / "eov.pth"),
                  "DATASETS.TRAIN", f"('{panoptic}/train',)", "DATASETS.TEST", f"('{panoptic}/val',)", *EOV_FAST], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["custom_shapes_panoptic_val"]
    assert {"PQ", "PQ_th", "PQ_st", "PQ-circle", "PQ-grass"} <= set(results["panoptic_seg"])
    assert {"mIoU", "IoU-grass, lawn"} <= set(results["sem_seg"])
    state = torch.load(out / "model_final.pth", weights_only=False)["model"]
    assert state["light_weight_decoder.criterion.empty_weight"].shape == (5,)  # 4 classes + void

    # Zero-shot on a semantic folder: mIoU with the folder's vocabulary.
    shapes, evaluation = examples / "shapes", tmp_path / "eval"
    result = run(["sh", "eval.sh", EOV_CONFIG, "0", str(evaluation), "MODEL.WEIGHTS", str(out / "model_final.pth"),
                  "DATASETS.TEST", f"('{shapes}/val',)", "MODEL.EOV_SEG.TEST.PANOPTIC_ON", "False",
                  "INPUT.MIN_SIZE_TEST", "64", "MODEL.EOV_SEG.TEXT_CACHE_DIR", ""], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IoU-polygon, angular shape" in json.loads((evaluation / "results.json").read_text())["custom_shapes_val"]["sem_seg"]


def test_training_stops_before_it_starts_on_a_broken_folder(examples, tmp_path):
    folder = copy(examples, tmp_path)
    SEMANTIC_PROBLEMS["label size"][0](folder)
    result = run(["sh", "run.sh", SED_CONFIG, "0", str(tmp_path / "out"), "DATASETS.TRAIN", f"('{folder}/train',)",
                  "DATASETS.TEST", f"('{folder}/val',)", *SED_FAST], tmp_path)
    assert result.returncode != 0
    assert f"{folder}/val/labels/val_00000.png: size 64x32 differs from its image" in result.stderr
    assert "Starting training" not in result.stdout + result.stderr
