"""The prepare scripts on miniature raw downloads in each dataset's original format."""
import json

import numpy as np
import pytest
from PIL import Image

from helpers import load_image, prepare, save_image
from sed.resources import reference_path


@pytest.mark.slow
def test_coco_stuff(tmp_path):
    base = tmp_path / "coco-stuff"
    for split in ("train2017", "val2017"):
        save_image(np.zeros((4, 4, 3), np.uint8), base / "images" / split / "000000000001.jpg")
        save_image(np.array([[0, 181, 255, 11]], np.uint8), base / "annotations" / split / "000000000001.png")
    result = prepare("prepare_coco_stuff.py", tmp_path)
    assert result.returncode == 0, result.stderr
    out = load_image(base / "annotations_detectron2" / "val2017" / "000000000001.png")
    assert out.dtype == np.uint8 and out.tolist() == [[0, 170, 255, 255]]  # 11 is a gap in COCO's ids
    again = prepare("prepare_coco_stuff.py", tmp_path)
    assert "1 of 1 already converted" in again.stdout


def test_ade20k_150(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    save_image(np.zeros((4, 4, 3), np.uint8), base / "images" / "validation" / "ADE_val_00000001.jpg")
    save_image(np.array([[0, 1, 150]], np.uint8), base / "annotations" / "validation" / "ADE_val_00000001.png")
    assert prepare("prepare_ade20k_150.py", tmp_path).returncode == 0
    out = load_image(base / "annotations_detectron2" / "validation" / "ADE_val_00000001.png")
    assert out.tolist() == [[255, 0, 149]]


def test_ade20k_847(tmp_path):
    folder = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE" / "validation" / "cultural" / "room"
    seg = np.zeros((600, 700, 3), np.uint8)
    seg[:, :350] = (115, 162, 0)  # object id 11 * 256 + 162 = 2978 ("wall", train id 0)
    seg[:, 350:] = (5, 7, 0)      # object id 7: not among the 847 classes
    save_image(np.full((600, 700, 3), 90, np.uint8), folder / "ADE_frame_1.jpg")
    save_image(seg, folder / "ADE_frame_1_seg.png")
    result = prepare("prepare_ade20k_847.py", tmp_path)
    assert result.returncode == 0, result.stderr
    base = tmp_path / "ADE20K_2021_17_01"
    label = Image.open(base / "annotations_detectron2" / "validation" / "ADE_frame_1.tif")
    image = Image.open(base / "images_detectron2" / "validation" / "ADE_frame_1.jpg")
    assert image.size == label.size == (597, 512)
    values = np.array(label)
    assert values.dtype == np.uint16 and set(np.unique(values)) == {0, 65535}


def test_pascal_context_59(tmp_path):
    from pycocotools import mask as mask_utils

    base = tmp_path / "VOCdevkit" / "VOC2010"
    save_image(np.zeros((4, 4, 3), np.uint8), base / "JPEGImages" / "2008_000002.jpg")
    masks = [np.zeros((4, 4), np.uint8) for _ in range(2)]
    masks[0][:, :2] = 1
    masks[1][:2, :] = 1
    rles = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
    for rle in rles:
        rle["counts"] = rle["counts"].decode()
    detail = {
        "images": [{"image_id": 1, "file_name": "2008_000002.jpg", "height": 4, "width": 4, "phase": "val"},
                   {"image_id": 2, "file_name": "2008_000003.jpg", "height": 4, "width": 4, "phase": "train"}],
        "annos_segmentation": [{"image_id": 1, "category_id": 2, "segmentation": rles[0]},
                               {"image_id": 1, "category_id": 1, "segmentation": rles[1]}],
    }
    (base / "trainval_merged.json").write_text(json.dumps(detail))
    result = prepare("prepare_pascal_context_59.py", tmp_path)
    assert result.returncode == 0, result.stderr
    out_dir = base / "annotations_detectron2" / "pc59_val"
    assert [p.name for p in out_dir.iterdir()] == ["2008_000002.png"]
    # Category 2 is the first kept id (train id 0); 1 is not kept and paints over it; 0 -> 255.
    expected = np.full((4, 4), 255)
    expected[2:, :2] = 0
    assert load_image(out_dir / "2008_000002.png").tolist() == expected.tolist()


@pytest.mark.slow
def test_pascal_context_459(tmp_path):
    from scipy.io import savemat

    base = tmp_path / "VOCdevkit" / "VOC2010"
    save_image(np.zeros((4, 4, 3), np.uint8), base / "JPEGImages" / "2008_000002.jpg")
    ids = reference_path("pascalcontext_val.txt").read_text().split()
    assert len(ids) > 5000
    (base / "trainval").mkdir(parents=True)
    result = prepare("prepare_pascal_context_459.py", tmp_path)
    assert result.returncode != 0 and f"{len(ids)} of {len(ids)} val label maps are missing" in result.stderr
    for i in ids:
        savemat(base / "trainval" / f"{i}.mat", {"LabelMap": np.array([[1, 459], [2, 3]], np.uint16)})
    result = prepare("prepare_pascal_context_459.py", tmp_path)
    assert result.returncode == 0, result.stderr
    out = Image.open(base / "annotations_detectron2" / "pc459_val" / f"{ids[0]}.tif")
    assert np.array(out).dtype == np.uint16 and np.array(out).tolist() == [[0, 458], [1, 2]]


def test_voc_both_variants(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    save_image(np.zeros((4, 4, 3), np.uint8), base / "JPEGImages" / "2007_000033.jpg")
    save_image(np.array([[0, 5], [255, 20]], np.uint8), base / "SegmentationClassAug" / "2007_000033.png")
    save_image(np.array([[0, 0], [255, 0]], np.uint8), base / "SegmentationClassAug" / "2007_000042.png")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000042\n")
    assert prepare("prepare_voc.py", tmp_path).returncode == 0
    assert load_image(base / "annotations_detectron2" / "val" / "2007_000033.png").tolist() == [[255, 4], [255, 19]]
    assert load_image(base / "annotations_detectron2_bg" / "val" / "2007_000033.png").tolist() == [[20, 4], [255, 19]]
    assert not (base / "annotations_detectron2" / "val" / "2007_000042.png").exists()


@pytest.mark.parametrize("script", ["prepare_coco_stuff.py", "prepare_ade20k_150.py", "prepare_ade20k_847.py",
                                    "prepare_pascal_context_59.py", "prepare_pascal_context_459.py", "prepare_voc.py"])
def test_missing_download_fails_clearly(tmp_path, script):
    result = prepare(script, tmp_path)
    assert result.returncode != 0
    assert f"error: {tmp_path}" in result.stderr and "datasets/README.md" in result.stderr
