"""The panoptic prepare scripts (COCO, ADE20K-150, Cityscapes) on miniature downloads in their
original layouts, and the registered datasets reading what they write."""
import importlib.util
import json
import shutil

import numpy as np
from detectron2.data import DatasetCatalog
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
import pytest

from helpers import ROOT, load_image, prepare, save_image

# ADE-150 thing classes (0-based), as datasets-panoptic.md section 2 lists them.
ADE_THINGS = [7, 8, 10, 12, 14, 15, 18, 19, 20, 22, 23, 24, 27, 30, 31, 32, 33, 35, 36, 37, 38, 39, 41, 42, 43,
              44, 45, 47, 49, 50, 53, 55, 56, 57, 58, 62, 64, 65, 66, 67, 69, 70, 71, 72, 73, 74, 75, 76, 78, 80,
              81, 82, 83, 85, 86, 87, 88, 89, 90, 92, 93, 95, 97, 98, 102, 103, 104, 107, 108, 110, 111, 112,
              115, 116, 118, 119, 120, 121, 123, 124, 125, 126, 127, 129, 130, 132, 133, 134, 135, 136, 137,
              138, 139, 142, 143, 144, 146, 147, 148, 149]


def registered(monkeypatch, root, name):
    """Dataset dicts of a registered dataset read under ``root``, after checking their files."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    dicts = DatasetCatalog.get(name)
    for d in dicts:
        for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
            assert (root / d[key]).is_file(), (key, d[key])
    return dicts


def succeeded(result):
    assert result.returncode == 0, result.stderr
    return result


# COCO ---------------------------------------------------------------------------------------

def write_coco_split(base, split, segments_info, ids):
    name = f"panoptic_{split}2017"
    save_image(id2rgb(ids), base / name / "000000000139.png")
    save_image(np.zeros(ids.shape + (3,), np.uint8), base / f"{split}2017" / "000000000139.jpg")
    annotation = {"image_id": 139, "file_name": "000000000139.png", "segments_info": segments_info}
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    (base / "annotations" / f"{name}.json").write_text(json.dumps({"annotations": [annotation]}))


def coco_example(base):
    ids = np.array([[3226956, 3226956, 5, 5, 0, 777],
                    [3226956, 1000, 1000, 5, 0, 777]])
    segments_info = [{"id": 3226956, "category_id": 1, "iscrowd": 0},  # person: index 0
                     {"id": 5, "category_id": 200, "iscrowd": 1},      # a crowd of rug-merged: index 132
                     {"id": 1000, "category_id": 92, "iscrowd": 0}]    # banner: index 80
    for split in ("val", "train"):
        write_coco_split(base, split, segments_info, ids)


@pytest.mark.slow
def test_coco_semantic_from_panoptic(tmp_path, monkeypatch):
    base = tmp_path / "coco"
    coco_example(base)
    succeeded(prepare("prepare_coco_panoptic.py", tmp_path))
    for split in ("val", "train"):
        label = load_image(base / f"panoptic_semseg_{split}2017" / "000000000139.png")
        # Crowd segments are painted too; VOID and unlisted ids (777) are 255.
        assert label.dtype == np.uint8 and label.tolist() == [[0, 0, 132, 132, 255, 255], [0, 80, 80, 132, 255, 255]]
    assert "1 of 1 already converted" in succeeded(prepare("prepare_coco_panoptic.py", tmp_path)).stdout
    (d,) = registered(monkeypatch, tmp_path, "openvocab_coco_2017_val_panoptic_with_sem_seg")
    assert [(s["category_id"], s["isthing"], s["iscrowd"]) for s in d["segments_info"]] == \
        [(0, True, 0), (132, False, 1), (80, False, 0)]


@pytest.mark.slow
def test_coco_missing_and_incomplete_inputs(tmp_path):
    base = tmp_path / "coco"
    result = prepare("prepare_coco_panoptic.py", tmp_path)
    assert result.returncode != 0 and f"error: {base / 'annotations' / 'panoptic_val2017.json'} not found" in result.stderr
    coco_example(base)
    shutil.rmtree(base / "panoptic_train2017")
    result = prepare("prepare_coco_panoptic.py", tmp_path)
    assert result.returncode != 0 and "Unpack" in result.stderr and "panoptic_train2017.zip" in result.stderr
    assert not (base / "panoptic_semseg_val2017").exists()  # every split is checked before any work
    (base / "panoptic_val2017" / "000000000139.png").unlink()
    result = prepare("prepare_coco_panoptic.py", tmp_path, "--splits", "val")
    assert result.returncode != 0 and "1 of 1 panoptic PNGs listed in panoptic_val2017.json are missing" in result.stderr


# ADE20K -------------------------------------------------------------------------------------

def ade_script():
    spec = importlib.util.spec_from_file_location("prepare_ade20k_panoptic", ROOT / "datasets" / "prepare_ade20k_panoptic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_ade_image(base, stem, semantic, instance, folder="validation"):
    save_image(np.zeros(semantic.shape + (3,), np.uint8), base / "images" / folder / f"{stem}.jpg")
    save_image(semantic.astype(np.uint8), base / "annotations" / folder / f"{stem}.png")
    save_image(instance.astype(np.uint8), base / "annotations_instance" / folder / f"{stem}.png")


def ade_crafted():
    """A 6 x 8 image: wall (columns 0-3, but unlabelled at (0, 0)), sky, a floor patch, and a
    person region; instances: two persons (the last person column stays uncovered), a bed on
    the wall, a cabinet exactly over the floor patch."""
    semantic = np.zeros((6, 8), np.uint8)
    semantic[:, :4] = 1      # wall -> class 0 (stuff)
    semantic[0, 0] = 0       # unlabelled
    semantic[4:, :2] = 4     # floor -> class 3 (stuff)
    semantic[:3, 4:] = 3     # sky -> class 2 (stuff)
    semantic[3:, 4:] = 13    # person -> class 12 (thing)
    instance = np.zeros((6, 8, 3), np.uint8)
    instance[3:, 4:6] = (4, 1, 0)   # person (instance class 4 -> 12)
    instance[1:3, :2] = (1, 2, 0)   # bed (1 -> 7), over the wall
    instance[3:, 6] = (4, 3, 0)     # a second person
    instance[4:, :2] = (3, 4, 0)    # cabinet (3 -> 10), covering the floor entirely
    return semantic, instance


def ade_raw(base, bad_last=False):
    """The crafted image and four random ones with several instances per class; with
    ``bad_last``, the last image has an instance with two instance classes."""
    write_ade_image(base, "ADE_val_00000001", *ade_crafted())
    rng = np.random.default_rng(0)
    for i in range(2, 6):
        semantic = rng.integers(0, 151, (12, 16))
        instance = np.zeros((12, 16, 3), np.uint8)
        instance[..., 1] = rng.integers(0, 7, (12, 16))
        classes = np.concatenate([[0], rng.choice([4, 4, 9, 100], 6)])
        instance[..., 0] = classes[instance[..., 1]]
        if bad_last and i == 5:
            instance[..., 0][instance[..., 1] == 1] = 4
            instance[0, 0] = (1, 1, 0)
        write_ade_image(base, f"ADE_val_{i:08d}", semantic, instance)


def ade_outputs(base):
    pngs = {p.name: load_image(p) for p in sorted((base / "ade20k_panoptic_val").glob("*.png"))}
    return pngs, json.loads((base / "ade20k_panoptic_val.json").read_text()), \
        json.loads((base / "ade20k_instance_val.json").read_text())


def test_ade_instance_class_mapping():
    script = ade_script()
    assert list(script.THING_CLASSES) == ADE_THINGS
    assert len(script.INSTANCE_CLASS) == 100 and sorted(script.INSTANCE_CLASS.values()) == ADE_THINGS
    assert [script.INSTANCE_CLASS[k] for k in (1, 2, 3, 4, 100)] == [7, 8, 10, 12, 149]
    assert rgb2id(np.array(script.COLORS)[None].astype(np.uint8)).min() > 0  # no class colour is VOID
    assert len({tuple(c) for c in script.COLORS}) == 150


@pytest.mark.slow
def test_ade_panoptic_and_instance(tmp_path, monkeypatch):
    base = tmp_path / "ADEChallengeData2016"
    ade_raw(base)
    write_ade_image(base, "ADE_train_00000001", *ade_crafted(), folder="training")
    names = [f"name{i}" for i in range(1, 151)]
    rows = [f"{i}\t0.1\t1\t1\t{name}, synonym " for i, name in enumerate(names, start=1)]
    (base / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n" + "\n".join(rows) + "\n")
    succeeded(prepare("prepare_ade20k_panoptic.py", tmp_path, "--splits", "train", "val"))
    pngs, panoptic, instances = ade_outputs(base)
    assert not (base / ".ade20k_panoptic_val.parts").exists()
    train = json.loads((base / "ade20k_panoptic_train.json").read_text())["annotations"]
    without_ids = [[dict(s, id=None) for s in a["segments_info"]] for a in (train[0], panoptic["annotations"][0])]
    assert without_ids[0] == without_ids[1]  # the training image is the crafted one too

    categories = panoptic["categories"]
    assert [c["id"] for c in categories] == list(range(150)) and [c["name"] for c in categories] == names
    assert [c["id"] for c in categories if c["isthing"]] == ADE_THINGS
    assert panoptic["images"][0] == {"id": "ADE_val_00000001", "file_name": "ADE_val_00000001.jpg",
                                     "width": 8, "height": 6}
    annotation = panoptic["annotations"][0]
    assert annotation["image_id"] == "ADE_val_00000001" and annotation["file_name"] == "ADE_val_00000001.png"
    segments = annotation["segments_info"]
    # Stuff first (class order), then one segment per instance; stuff areas and boxes unreduced.
    assert [(s["category_id"], s["area"], s["bbox"], s["iscrowd"]) for s in segments] == [
        (0, 19, [0, 0, 4, 6], 0), (2, 12, [4, 0, 4, 3], 0), (3, 4, [0, 4, 2, 2], 0),
        (12, 6, [4, 3, 2, 3], 0), (7, 4, [0, 1, 2, 2], 0), (12, 3, [6, 3, 1, 3], 0), (10, 4, [0, 4, 2, 2], 0)]
    wall, sky, floor, person1, bed, person2, cabinet = [s["id"] for s in segments]
    colors = {c["id"]: c["color"] for c in categories}
    assert wall == rgb2id(colors[0]) and person1 == rgb2id(colors[12]) and person2 != person1
    assert np.abs(id2rgb(person2) - np.array(colors[12])).max() <= 30
    ids = rgb2id(pngs["ADE_val_00000001.png"])
    expected = np.array([[0, wall, wall, wall, sky, sky, sky, sky],
                         [bed, bed, wall, wall, sky, sky, sky, sky],
                         [bed, bed, wall, wall, sky, sky, sky, sky],
                         [wall, wall, wall, wall, person1, person1, person2, 0],
                         [cabinet, cabinet, wall, wall, person1, person1, person2, 0],
                         [cabinet, cabinet, wall, wall, person1, person1, person2, 0]])
    assert ids.tolist() == expected.tolist()  # VOID: unlabelled, and thing pixels without instance

    for annotation in panoptic["annotations"]:
        ids = rgb2id(pngs[annotation["file_name"]])
        listed = [s["id"] for s in annotation["segments_info"]]
        assert len(set(listed)) == len(listed) and set(np.unique(ids)) - {0} <= set(listed)
        for s in annotation["segments_info"]:
            in_png = (ids == s["id"]).sum()
            assert s["iscrowd"] == 0 and (s["area"] == in_png if s["category_id"] in ADE_THINGS else s["area"] >= in_png)

    assert instances["images"] == panoptic["images"]
    assert [c["id"] for c in instances["categories"]] == ADE_THINGS and instances["categories"][0]["name"] == "name8"
    annotations = instances["annotations"]
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    first = [a for a in annotations if a["image_id"] == "ADE_val_00000001"]
    assert [(a["category_id"], a["area"], a["bbox"], a["iscrowd"]) for a in first] == [
        (12, 6, [4, 3, 2, 3], 0), (7, 4, [0, 1, 2, 2], 0), (12, 3, [6, 3, 1, 3], 0), (10, 4, [0, 4, 2, 2], 0)]
    for a in annotations:
        instance_map = load_image(base / "annotations_instance" / "validation" / f"{a['image_id']}.png")
        mask = mask_utils.decode(a["segmentation"]).astype(bool)
        number = np.unique(instance_map[..., 1][mask])
        assert len(number) == 1 and number[0] != 0 and (mask == (instance_map[..., 1] == number[0])).all()
        assert a["area"] == mask.sum()
    assert len(annotations) == sum(len(np.unique(load_image(p)[..., 1])) - 1
                                   for p in (base / "annotations_instance" / "validation").glob("*.png"))
    assert len(COCO(str(base / "ade20k_instance_val.json")).getAnnIds(imgIds=["ADE_val_00000001"])) == 4

    assert "already converted" in succeeded(prepare("prepare_ade20k_panoptic.py", tmp_path)).stdout
    succeeded(prepare("prepare_ade20k_150.py", tmp_path, "--splits", "val", "train"))
    for name in ("openvocab_ade20k_panoptic_val", "openvocab_ade20k_panoptic_train"):
        dicts = registered(monkeypatch, tmp_path, name)
        assert [(s["category_id"], s["isthing"]) for s in dicts[0]["segments_info"]] == \
            [(0, False), (2, False), (3, False), (12, True), (7, True), (12, True), (10, True)]


@pytest.mark.slow
def test_ade_deterministic_and_resumable(tmp_path):
    one, two, resumed = (tmp_path / name for name in ("one", "two", "resumed"))
    ade_raw(one / "ADEChallengeData2016")
    shutil.copytree(one, two)
    ade_raw(resumed / "ADEChallengeData2016", bad_last=True)
    succeeded(prepare("prepare_ade20k_panoptic.py", one, "--workers", "1"))
    succeeded(prepare("prepare_ade20k_panoptic.py", two, "--workers", "2"))
    result = prepare("prepare_ade20k_panoptic.py", resumed, "--workers", "1")
    assert result.returncode != 0 and "instance 1 has instance classes [1, 4]" in result.stderr
    ade_raw(resumed / "ADEChallengeData2016")  # the corrected download
    assert "4 of 5 already converted" in succeeded(prepare("prepare_ade20k_panoptic.py", resumed, "--workers", "2")).stdout

    reference = ade_outputs(one / "ADEChallengeData2016")
    assert reference[1]["categories"][0]["name"] == "wall"  # no objectInfo150.txt: the vocabulary's names
    assert sum(len(a["segments_info"]) for a in reference[1]["annotations"]) > 20
    for root in (two, resumed):
        pngs, panoptic, instances = ade_outputs(root / "ADEChallengeData2016")
        assert pngs.keys() == reference[0].keys() and all((pngs[k] == reference[0][k]).all() for k in pngs)
        assert panoptic == reference[1] and instances == reference[2]


@pytest.mark.slow
def test_ade_missing_and_incomplete_inputs(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    result = prepare("prepare_ade20k_panoptic.py", tmp_path)
    assert result.returncode != 0 and f"error: {base / 'images' / 'validation'} not found" in result.stderr
    write_ade_image(base, "ADE_val_00000001", *ade_crafted())
    write_ade_image(base, "ADE_val_00000002", *ade_crafted())
    shutil.rmtree(base / "annotations_instance")
    result = prepare("prepare_ade20k_panoptic.py", tmp_path)
    assert result.returncode != 0 and "annotations_instance.tar" in result.stderr
    write_ade_image(base, "ADE_val_00000001", *ade_crafted())
    result = prepare("prepare_ade20k_panoptic.py", tmp_path)
    assert result.returncode != 0 and "1 of 2 instance maps" in result.stderr and "ADE_val_00000002.png" in result.stderr


# Cityscapes ---------------------------------------------------------------------------------

def write_cityscapes_image(gt_fine, split, city, instance_ids):
    """An instanceIds map and polygons whose regions are those of ``instance_ids`` (axis-aligned
    boxes of one label each)."""
    stem = f"{city}_000000_000019"
    folder = gt_fine / split / city
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(instance_ids.astype(np.uint16)).save(folder / f"{stem}_gtFine_instanceIds.png")
    save_image(np.zeros(instance_ids.shape + (3,), np.uint8),
         gt_fine.parent / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
    names = {0: "unlabeled", 4: "static", 7: "road", 26: "car"}
    objects = []
    for value in np.unique(instance_ids):
        rows, cols = np.nonzero(instance_ids == value)
        box = [[int(cols.min()), int(rows.min())], [int(cols.max()), int(rows.min())],
               [int(cols.max()), int(rows.max())], [int(cols.min()), int(rows.max())]]
        objects.append({"label": names[value if value < 1000 else value // 1000], "polygon": box})
    height, width = instance_ids.shape
    (folder / f"{stem}_gtFine_polygons.json").write_text(
        json.dumps({"imgHeight": height, "imgWidth": width, "objects": objects}))


def cityscapes_example(gt_fine):
    ids = np.zeros((8, 12), np.int64)
    ids[4:, :] = 7            # road
    ids[:2, 8:] = 4           # static: ignored in evaluation
    ids[2:6, 0:4] = 26000     # a car
    ids[2:6, 5:8] = 26001     # another car
    ids[2:4, 9:12] = 26       # a car group (crowd)
    for split, city in (("val", "frankfurt"), ("val", "lindau"), ("train", "aachen")):
        write_cityscapes_image(gt_fine, split, city, ids)
    return ids


@pytest.mark.slow
def test_cityscapes(tmp_path, monkeypatch):
    gt_fine = tmp_path / "cityscapes" / "gtFine"
    ids = cityscapes_example(gt_fine)
    succeeded(prepare("prepare_cityscapes_panoptic.py", tmp_path))
    train_ids = load_image(gt_fine / "val" / "lindau" / "lindau_000000_000019_gtFine_labelTrainIds.png")
    assert train_ids[7, 0] == 0 and train_ids[3, 1] == 13 and train_ids[0, 0] == 255 and train_ids[0, 9] == 255
    panoptic = json.loads((gt_fine / "cityscapes_panoptic_val.json").read_text())
    assert [image["id"] for image in panoptic["images"]] == ["frankfurt_000000_000019", "lindau_000000_000019"]
    assert len(panoptic["categories"]) == 19
    segments = {s["id"]: (s["category_id"], s["iscrowd"], s["area"]) for s in panoptic["annotations"][1]["segments_info"]}
    assert segments == {7: (7, 0, 34), 26: (26, 1, 6), 26000: (26, 0, 16), 26001: (26, 0, 12)}
    png = load_image(gt_fine / "cityscapes_panoptic_val" / "lindau_000000_000019_gtFine_panoptic.png")
    assert (rgb2id(png) == np.where(ids == 4, 0, ids)).all()
    assert (gt_fine / "cityscapes_panoptic_train.json").is_file() and not (gt_fine / ".cityscapes_panoptic_val.parts").exists()
    assert len(list(gt_fine.glob("*/*/*_gtFine_instanceIds.png"))) == 3  # the converter's links left the sources alone

    again = succeeded(prepare("prepare_cityscapes_panoptic.py", tmp_path)).stdout
    assert "2 of 2 already converted" in again and "panoptic val: already converted" in again
    dicts = registered(monkeypatch, tmp_path, "openvocab_cityscapes_fine_panoptic_val")
    assert {s["id"]: s["category_id"] for s in dicts[1]["segments_info"]} == {7: 0, 26: 13, 26000: 13, 26001: 13}


def test_cityscapes_missing_and_incomplete_inputs(tmp_path):
    gt_fine = tmp_path / "cityscapes" / "gtFine"
    result = prepare("prepare_cityscapes_panoptic.py", tmp_path)
    assert result.returncode != 0 and f"error: {gt_fine / 'val'} not found" in result.stderr
    cityscapes_example(gt_fine)
    (gt_fine / "val" / "lindau" / "lindau_000000_000019_gtFine_instanceIds.png").unlink()
    result = prepare("prepare_cityscapes_panoptic.py", tmp_path)
    assert result.returncode != 0 and "1 of 2 instanceIds maps" in result.stderr
