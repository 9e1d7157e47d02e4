"""ADE20K-150 panoptic and instance annotations from the semantic and instance maps (the
conversion of EOV-Seg's and Mask2Former's prepare_ade20k_{pan,ins}_seg.py).

Things are the 100 ADE-150 classes flagged ``isthing`` in sed/vocabularies/eov_seg/ade20k_150.json (the
classes that the instance annotations cover), stuff the other 50. Instance class k (the R value
of an instance PNG, 1..100) is the k-th thing class in ascending ADE-150 id order (1 bed -> 7,
2 windowpane -> 8, 3 cabinet -> 10, 4 person -> 12, ..., 100 flag -> 149), the table of the
authors' ade20k_instance_catid_mapping.txt.

Per image, into a panoptic PNG (segment id = R + 256 G + 65536 B, 0 = VOID) and its
``segments_info`` (0-based ADE-150 ``category_id``, ``area``, ``bbox``, ``iscrowd`` 0):
1. stuff: each stuff class present in the semantic map is one segment of all its pixels;
2. things: each instance (G != 0 in the instance PNG) is one segment of its mapped class,
   painted over stuff where the two annotations overlap. A stuff segment keeps the area and
   box it had before (it may even keep no pixel in the PNG), as the authors' JSON does.
Unlabelled pixels and pixels of thing classes that no instance covers stay VOID. Segment ids
follow panopticapi's IdGenerator: a stuff segment gets its class colour, the first instance of
a class too, later instances a random colour near it. The authors left that randomness
unseeded; here it is seeded from each image's file name, so the output is the same on every
run and for any number of workers. Class colours: the project's palette (sed.data.datasets),
shifted by one so that no class is black, which is segment id 0 (VOID).

The instance JSON (COCO format, for mask AP) has one annotation per instance: RLE mask, box,
area (mask area), iscrowd 0, category_id (0-based ADE-150 id); image ids are the file stems.
Category names: the first name of each class in ADEChallengeData2016/objectInfo150.txt, or
when that file is absent the first synonym of the project's vocabulary.

Expects, under $DETECTRON2_DATASETS (default ./datasets):
    ADEChallengeData2016/images/{validation,training}/*.jpg        (ADEChallengeData2016.zip)
    ADEChallengeData2016/annotations/{validation,training}/*.png   (ADEChallengeData2016.zip)
    ADEChallengeData2016/annotations_instance/{validation,training}/*.png (annotations_instance.tar)
Writes ADEChallengeData2016/ade20k_panoptic_{val,train}/*.png, ade20k_panoptic_{val,train}.json
and ade20k_instance_{val,train}.json (val only unless --splits names train). The registered
datasets also read the semantic maps of datasets/prepare_ade20k_150.py.

    python datasets/prepare_ade20k_panoptic.py [--root DIR] [--workers N] [--splits val train]
"""
import shutil
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from panopticapi.utils import IdGenerator
from PIL import Image
from pycocotools import mask as mask_utils

from sed.data.datasets import palette
from sed.data.prepare import (ADE20K_FOLDERS, load_json, parse_args, read_label, require, require_files,
                              run_jobs, save_atomic, save_json_atomic)
from sed.resources import vocabulary_path
from sed.vocabulary import load_vocabulary

VOCABULARY = load_vocabulary(str(vocabulary_path("eov_seg/ade20k_150.json")))
NUM_CLASSES = len(VOCABULARY)
THING_CLASSES = tuple(i for i, isthing in enumerate(VOCABULARY.isthing) if isthing)
# Instance class (R value, 1-based) -> 0-based ADE-150 class.
INSTANCE_CLASS = dict(enumerate(THING_CLASSES, start=1))
COLORS = palette(NUM_CLASSES + 1)[1:]
ID_CATEGORIES = {c: {"isthing": int(VOCABULARY.isthing[c]), "color": COLORS[c]} for c in range(NUM_CLASSES)}


def class_names(base: Path) -> List[str]:
    """One name per ADE-150 class (see the module docstring)."""
    info = base / "objectInfo150.txt"
    if not info.exists():
        return [name.split(",")[0].strip() for name in VOCABULARY.names]
    rows = [line.split("\t") for line in info.read_text().splitlines()[1:] if line.strip()]
    if [int(row[0]) for row in rows] != list(range(1, NUM_CLASSES + 1)):
        raise SystemExit(f"error: {info} does not list classes 1..{NUM_CLASSES} in order: is it complete?")
    return [row[-1].split(",")[0].strip() for row in rows]


def encode(mask: np.ndarray) -> Tuple[Dict, List[int], int]:
    """RLE (with text counts), box [x, y, w, h] and area of a boolean mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    box = [int(v) for v in mask_utils.toBbox(rle)]
    area = int(mask_utils.area(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, box, area


def convert(image_path: Path, semantic_path: Path, instance_path: Path, png_path: Path, part_path: Path) -> None:
    """Panoptic PNG of one image, and a part file with its JSON entries (image, segments, instances)."""
    stem = image_path.stem
    with Image.open(image_path) as image:
        width, height = image.size
    semantic = read_label(semantic_path)
    with Image.open(instance_path) as image:
        instance = np.array(image.convert("RGB"))
    if semantic.shape != (height, width) or instance.shape[:2] != (height, width):
        raise ValueError(f"{stem}: the image is {width}x{height}, the semantic map {semantic.shape[::-1]}, "
                         f"the instance map {instance.shape[1::-1]}")
    if semantic.max() > NUM_CLASSES:
        raise ValueError(f"{semantic_path}: value {semantic.max()} is not an ADE-150 class (1..{NUM_CLASSES})")
    np.random.seed(zlib.crc32(stem.encode()))
    ids = IdGenerator(ID_CATEGORIES)
    panoptic = np.zeros((height, width, 3), np.uint8)
    segments, instances = [], []

    def paint(mask: np.ndarray, category: int) -> Dict:
        """Add a segment; returns its instance annotation."""
        segment_id, color = ids.get_id_and_color(category)
        panoptic[mask] = color
        rle, box, area = encode(mask)
        segments.append({"id": segment_id, "category_id": category, "area": area, "bbox": box, "iscrowd": 0})
        return {"segmentation": rle, "bbox": box, "area": area, "category_id": category, "iscrowd": 0}

    for value in np.unique(semantic):
        if value != 0 and not VOCABULARY.isthing[value - 1]:
            paint(semantic == value, int(value) - 1)
    for number in np.unique(instance[..., 1]):
        if number == 0:
            continue
        mask = instance[..., 1] == number
        classes = np.unique(instance[..., 0][mask])
        if len(classes) != 1 or int(classes[0]) not in INSTANCE_CLASS:
            raise ValueError(f"{instance_path}: instance {number} has instance classes {classes.tolist()}, "
                             f"expected one of 1..{len(INSTANCE_CLASS)}")
        instances.append(paint(mask, INSTANCE_CLASS[int(classes[0])]))
    save_atomic(panoptic, png_path)
    save_json_atomic({"image": {"id": stem, "file_name": image_path.name, "width": width, "height": height},
                      "segments_info": segments, "instances": instances}, part_path)


def outputs(base: Path, split: str) -> Tuple[Path, Path]:
    return base / f"ade20k_panoptic_{split}.json", base / f"ade20k_instance_{split}.json"


def parts_folder(base: Path, split: str) -> Path:
    """Where each image's JSON entries wait until the split's JSONs are written."""
    return base / f".ade20k_panoptic_{split}.parts"


def jobs_of_split(base: Path, split: str) -> List[Tuple]:
    """One job per image, after checking that the split's download is complete."""
    folder = ADE20K_FOLDERS[split]
    image_dir = require(base / "images" / folder, f"the {folder} images of ADEChallengeData2016.zip")
    semantic_dir = require(base / "annotations" / folder, f"the {folder} annotations of ADEChallengeData2016.zip")
    instance_dir = require(base / "annotations_instance" / folder,
                           f"the {folder} instance maps of annotations_instance.tar (ADE20K instance challenge)")
    images = sorted(image_dir.glob("*.jpg"))
    if not images:
        raise SystemExit(f"error: no images in {image_dir}: is the download complete?")
    require_files([semantic_dir / f"{p.stem}.png" for p in images], f"semantic maps of the images in {image_dir}")
    require_files([instance_dir / f"{p.stem}.png" for p in images], f"instance maps of the images in {image_dir}")
    png_dir, parts = base / f"ade20k_panoptic_{split}", parts_folder(base, split)
    return [(p, semantic_dir / f"{p.stem}.png", instance_dir / f"{p.stem}.png",
             png_dir / f"{p.stem}.png", parts / f"{p.stem}.json") for p in images]


def write_jsons(parts: List[Dict], names: List[str], panoptic_json: Path, instance_json: Path) -> None:
    """The split's panoptic and instance JSONs from the images' part files, in image order."""
    images = [part["image"] for part in parts]
    annotations = [{"image_id": part["image"]["id"], "file_name": f"{part['image']['id']}.png",
                    "segments_info": part["segments_info"]} for part in parts]
    categories = [{"id": c, "name": names[c], "isthing": ID_CATEGORIES[c]["isthing"],
                   "color": list(COLORS[c])} for c in range(NUM_CLASSES)]
    save_json_atomic({"images": images, "annotations": annotations, "categories": categories}, panoptic_json)
    instances = []
    for part in parts:
        for instance in part["instances"]:
            instances.append(dict(instance, id=len(instances) + 1, image_id=part["image"]["id"]))
    save_json_atomic({"images": images, "annotations": instances,
                      "categories": [{"id": c, "name": names[c]} for c in THING_CLASSES]}, instance_json)


def main():
    args = parse_args(__doc__, splits=tuple(ADE20K_FOLDERS), default_splits=("val",))
    base = Path(args.root) / "ADEChallengeData2016"
    todo = []
    for split in args.splits:
        if all(p.exists() for p in outputs(base, split)):
            print(f"ADE20K panoptic {split}: already converted, skipping it")
        else:
            todo.append(split)
    jobs = {split: jobs_of_split(base, split) for split in todo}  # every check before any work
    names = class_names(base)
    for split, split_jobs in jobs.items():
        run_jobs(split_jobs, convert, lambda job: list(job[3:]), args.workers, f"ADE20K panoptic {split}")
        write_jsons([load_json(job[4]) for job in split_jobs], names, *outputs(base, split))
        shutil.rmtree(parts_folder(base, split))


if __name__ == "__main__":
    main()
