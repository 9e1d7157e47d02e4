"""Registration of every semantic-segmentation dataset from one table.

Datasets live under ``$DETECTRON2_DATASETS`` (default ``./datasets``). Registering reads
nothing from disk: a dataset that is missing fails when it is first used, naming the missing
folder and the command that prepares it.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg

# The project's vocabulary files (same order as the train ids).
VOCABULARY_DIR = Path(__file__).resolve().parents[2] / "datasets"


@dataclass(frozen=True)
class SemSegDataset:
    """One split: images and label maps (train ids) matched by file stem."""

    name: str
    image_dir: str
    label_dir: str
    vocabulary: str
    prepare: str
    image_ext: str = "jpg"
    label_ext: str = "png"
    ignore_label: int = 255
    # Predicted indices >= this are merged into it before scoring (PAS-20b background).
    background_from: int = -1


DATASETS: List[SemSegDataset] = [
    SemSegDataset("coco_2017_train_stuff_all_sem_seg", "coco-stuff/images/train2017",
                  "coco-stuff/annotations_detectron2/train2017", "coco.json",
                  "python datasets/prepare_coco_stuff.py"),
    SemSegDataset("coco_2017_test_stuff_all_sem_seg", "coco-stuff/images/val2017",
                  "coco-stuff/annotations_detectron2/val2017", "coco.json",
                  "python datasets/prepare_coco_stuff.py"),
    SemSegDataset("ade20k_150_test_sem_seg", "ADEChallengeData2016/images/validation",
                  "ADEChallengeData2016/annotations_detectron2/validation", "ade150.json",
                  "python datasets/prepare_ade20k_150.py"),
    SemSegDataset("ade20k_full_sem_seg_freq_val_all", "ADE20K_2021_17_01/images_detectron2/validation",
                  "ADE20K_2021_17_01/annotations_detectron2/validation", "ade847.json",
                  "python datasets/prepare_ade20k_847.py", label_ext="tif", ignore_label=65535),
    SemSegDataset("context_59_test_sem_seg", "VOCdevkit/VOC2010/JPEGImages",
                  "VOCdevkit/VOC2010/annotations_detectron2/pc59_val", "pc59.json",
                  "python datasets/prepare_pascal_context_59.py"),
    SemSegDataset("context_459_test_sem_seg", "VOCdevkit/VOC2010/JPEGImages",
                  "VOCdevkit/VOC2010/annotations_detectron2/pc459_val", "pc459.json",
                  "python datasets/prepare_pascal_context_459.py", label_ext="tif", ignore_label=459),
    SemSegDataset("voc_2012_test_sem_seg", "VOCdevkit/VOC2012/JPEGImages",
                  "VOCdevkit/VOC2012/annotations_detectron2/val", "voc20.json",
                  "python datasets/prepare_voc.py"),
    SemSegDataset("voc_2012_test_background_sem_seg", "VOCdevkit/VOC2012/JPEGImages",
                  "VOCdevkit/VOC2012/annotations_detectron2_bg/val", "voc20b.json",
                  "python datasets/prepare_voc.py", background_from=20),
    # The embedded default: generated coloured shapes (see sed/data/synthetic.py).
    SemSegDataset("sed_synthetic_train", "sed_synthetic/images/train",
                  "sed_synthetic/annotations_detectron2/train", "synthetic.json",
                  "python datasets/prepare_synthetic.py", image_ext="png"),
    SemSegDataset("sed_synthetic_val", "sed_synthetic/images/val",
                  "sed_synthetic/annotations_detectron2/val", "synthetic.json",
                  "python datasets/prepare_synthetic.py", image_ext="png"),
]


def dataset_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def load_split(spec: SemSegDataset) -> List[Dict]:
    """detectron2 dataset dicts of a split, read under the dataset root of the moment; fails
    clearly when its folders are missing."""
    root = dataset_root()
    for folder in (spec.image_dir, spec.label_dir):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"Dataset '{spec.name}' not found: {path} does not exist. Prepare it with "
                f"`{spec.prepare}` (see datasets/README.md), or point $DETECTRON2_DATASETS "
                f"(now {root!r}) at the folder that holds it."
            )
    return load_sem_seg(
        os.path.join(root, spec.label_dir), os.path.join(root, spec.image_dir),
        gt_ext=spec.label_ext, image_ext=spec.image_ext,
    )


def class_names(vocabulary: str) -> List[str]:
    with open(VOCABULARY_DIR / vocabulary, encoding="utf-8") as f:
        return json.load(f)


def load_sem_seg_label(path: str, dtype=int) -> np.ndarray:
    """Read a single-channel label map (PNG or TIFF) as an array of ``dtype``."""
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image, dtype=dtype)


def palette(num_classes: int) -> List[List[int]]:
    """Distinct RGB colours, the PASCAL VOC colour map: the bits of the class index are
    spread over the high bits of R, G and B."""
    colours = []
    for index in range(num_classes):
        rgb, c = [0, 0, 0], index
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << bit
            c >>= 3
        colours.append(rgb)
    return colours


def register_all() -> None:
    for spec in DATASETS:
        if spec.name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(spec.name, lambda spec=spec: load_split(spec))
        names = class_names(spec.vocabulary)
        if spec.background_from >= 0:
            names = names[: spec.background_from] + ["background"]
        MetadataCatalog.get(spec.name).set(
            stuff_classes=names,
            stuff_colors=palette(len(names)),
            vocabulary=str(VOCABULARY_DIR / spec.vocabulary),
            ignore_label=spec.ignore_label,
            background_from=spec.background_from,
            evaluator_type="sem_seg",
        )


register_all()
