"""The worked example's own datasets (docs/custom_datasets.md): the embedded default shapes,
written as custom dataset folders (sed/data/custom.py) with a vocabulary of their own, coarser
than the default's: circles, and every other shape as one "polygon" class.

- ``shapes``: semantic; JPEG images, uint8 PNG label maps (255 = ignore), ``dataset.json``.
- ``shapes_panoptic``: COCO panoptic PNGs and JSON; circles and polygons are things, sky and
  grass stuff.
"""
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from . import synthetic

# (class entry of classes.json, the embedded default's classes it gathers)
SEMANTIC_CLASSES = [
    ("background", ["background"]),
    ("circle, disc", ["red circle"]),
    ("polygon, angular shape", ["green square", "blue triangle", "yellow star"]),
]
PANOPTIC_CLASSES = [
    ({"name": "circle, disc", "isthing": True}, ["red circle"]),
    ({"name": "polygon, angular shape", "isthing": True}, ["blue triangle", "yellow star"]),
    ({"name": "sky", "isthing": False}, ["sky"]),
    ({"name": "grass, lawn", "isthing": False}, ["grass"]),
]


def class_map(default_names: List[str], classes) -> Dict[int, int]:
    """Default class index -> index of the class gathering it."""
    return {default_names.index(name): new for new, (_, names) in enumerate(classes) for name in names}


def save_jpeg(source: str, target: str) -> None:
    with Image.open(source) as image:
        image.convert("RGB").save(target, quality=95)


def write_json(data, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)


def write_semantic(source: str, out: str) -> None:
    """``source``: the embedded default's folder; ``out``: the custom folder to write."""
    mapping = class_map(synthetic.class_names(), SEMANTIC_CLASSES)
    table = np.full(256, synthetic.IGNORE_LABEL, np.uint8)
    for old, new in mapping.items():
        table[old] = new
    write_json([entry for entry, _ in SEMANTIC_CLASSES], os.path.join(out, "classes.json"))
    write_json({"ignore_label": synthetic.IGNORE_LABEL}, os.path.join(out, "dataset.json"))
    for split in sorted(os.listdir(os.path.join(source, "images"))):
        for kind in ("images", "labels"):
            os.makedirs(os.path.join(out, split, kind), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(source, "images", split))):
            stem = os.path.splitext(name)[0]
            save_jpeg(os.path.join(source, "images", split, name), os.path.join(out, split, "images", stem + ".jpg"))
            label = np.array(Image.open(os.path.join(source, "annotations_detectron2", split, name)))
            Image.fromarray(table[label]).save(os.path.join(out, split, "labels", stem + ".png"))


def write_panoptic(source: str, out: str) -> None:
    """``source``: the panoptic embedded default's folder; ``out``: the custom folder to write."""
    default_names = [name for name, _, _ in synthetic.PANOPTIC_CLASSES]
    # The default's category ids are class index + 1; the custom categories get ids 1..4.
    category = {old + 1: new + 1 for old, new in class_map(default_names, PANOPTIC_CLASSES).items()}
    categories = [{"id": i + 1, "name": entry["name"].split(",")[0], "isthing": int(entry["isthing"])}
                  for i, (entry, _) in enumerate(PANOPTIC_CLASSES)]
    write_json([entry for entry, _ in PANOPTIC_CLASSES], os.path.join(out, "classes.json"))
    splits = sorted(name[len("panoptic_"):-len(".json")] for name in os.listdir(source)
                    if name.startswith("panoptic_") and name.endswith(".json"))
    for split in splits:
        with open(os.path.join(source, f"panoptic_{split}.json")) as f:
            content = json.load(f)
        for kind in ("images", "panoptic"):
            os.makedirs(os.path.join(out, split, kind), exist_ok=True)
        for image in content["images"]:
            stem = os.path.splitext(image["file_name"])[0]
            save_jpeg(os.path.join(source, "images", split, image["file_name"]),
                      os.path.join(out, split, "images", stem + ".jpg"))
            shutil.copyfile(os.path.join(source, f"panoptic_{split}", stem + ".png"),
                            os.path.join(out, split, "panoptic", stem + ".png"))
            image["file_name"] = stem + ".jpg"
        for annotation in content["annotations"]:
            for segment in annotation["segments_info"]:
                segment["category_id"] = category[segment["category_id"]]
        write_json(dict(content, categories=categories), os.path.join(out, split, "panoptic.json"))


def write_examples(out: str, size: int = 128, seed: int = 0, splits: Optional[Dict[str, int]] = None) -> List[str]:
    """Write ``out/shapes`` and ``out/shapes_panoptic`` (``splits``: images per split, else the
    embedded defaults' counts); returns the two folders."""
    folders = [os.path.join(out, "shapes"), os.path.join(out, "shapes_panoptic")]
    counts = {"splits": splits} if splits else {}
    with tempfile.TemporaryDirectory() as tmp:
        write_semantic(synthetic.generate(tmp, size=size, seed=seed, **counts), folders[0])
        write_panoptic(synthetic.generate_panoptic(tmp, size=size, seed=seed, **counts), folders[1])
    return folders
