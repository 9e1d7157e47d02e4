"""The embedded default datasets: coloured shapes on textured backgrounds.

- Semantic (SED): the on-disk layout of the semantic benchmarks (RGB PNG images,
  single-channel uint8 PNG label maps of train ids, 255 = ignore on a thin band along every
  shape's outline).
- Panoptic (EOV-Seg): COCO's panoptic layout (segment-id PNGs + JSON, semantic maps), with
  several instances of each shape (things) on sky and ground regions (stuff).

Both run through exactly the same registration, data loading, training and evaluation code
as the real datasets.
"""
import json
import os
from typing import Dict, List, Tuple

import cv2
import numpy as np

# Class names (train id = position) and the colour each shape is drawn with (RGB).
CLASSES: List[Tuple[str, Tuple[int, int, int]]] = [
    ("background", (0, 0, 0)),
    ("red circle", (220, 40, 40)),
    ("green square", (40, 190, 60)),
    ("blue triangle", (50, 70, 220)),
    ("yellow star", (235, 215, 40)),
]
IGNORE_LABEL = 255
SPLITS = {"train": 96, "val": 24}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random texture in muted tones: (size, size, 3) uint8."""
    noise = rng.random((size // 8, size // 8, 3)).astype(np.float32)
    texture = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0.0, 0.04, (size, size, 3)).astype(np.float32)
    base = rng.uniform(90, 150, 3).astype(np.float32)
    return np.clip(base + 60 * (texture - 0.5) + 255 * fine, 0, 255).astype(np.uint8)


# Each shape's extent (half-side, or outer radius) per unit of "radius", chosen so that every
# kind covers the area of a circle of that radius (pi r^2): small shapes would otherwise be a
# rare class (a star of the circle's radius covers 42% of its area).
STAR_INNER = 0.45
EXTENT = {
    "circle": 1.0,
    "square": np.sqrt(np.pi) / 2,  # side 2a: area 4a^2
    "triangle": np.sqrt(np.pi / 2),  # base 2a, height 2a: area 2a^2
    "star": np.sqrt(np.pi / (5 * STAR_INNER * np.sin(np.pi / 5))),  # 10 triangles of sides a, 0.45a
}


def _shape_mask(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A filled shape (size, size) bool with the area of a circle of radius size/7 to size/4."""
    mask = np.zeros((size, size), np.uint8)
    radius = rng.integers(size // 7, size // 4) * EXTENT[kind]
    margin = int(np.ceil(radius))
    cx, cy = (int(v) for v in rng.integers(margin, size - margin, 2))
    if kind == "circle":
        cv2.circle(mask, (cx, cy), int(round(radius)), 1, -1)
    elif kind == "square":
        r = int(round(radius))
        cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
    elif kind == "triangle":
        pts = np.array([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)])
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:  # star
        angles = np.linspace(-np.pi / 2, 3 * np.pi / 2, 10, endpoint=False)
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * STAR_INNER)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def make_sample(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """One (image (size, size, 3) uint8 RGB, label (size, size) uint8) pair."""
    image = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    outline = np.zeros((size, size), bool)
    for class_id in rng.choice(np.arange(1, len(CLASSES)), size=int(rng.integers(1, 4)), replace=False):
        name, colour = CLASSES[class_id]
        mask = _shape_mask(name.split()[1], rng, size)
        jitter = rng.integers(-20, 21, 3)
        image[mask] = np.clip(np.array(colour) + jitter, 0, 255).astype(np.uint8)
        label[mask] = class_id
        edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        outline |= edge.astype(bool)
    label[outline] = IGNORE_LABEL
    return image, label


def generate(root: str, size: int = 128, seed: int = 0, splits: Dict[str, int] = SPLITS) -> str:
    """Write the dataset under ``root/sed_synthetic`` (skips files already written).

    Returns the dataset folder.
    """
    out = os.path.join(root, "sed_synthetic")
    rng = np.random.default_rng(seed)
    for split, count in splits.items():
        image_dir = os.path.join(out, "images", split)
        label_dir = os.path.join(out, "annotations_detectron2", split)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        for i in range(count):
            image, label = make_sample(rng, size)
            stem = f"{split}_{i:05d}"
            image_path = os.path.join(image_dir, stem + ".png")
            if not os.path.exists(image_path):
                cv2.imwrite(os.path.join(label_dir, stem + ".png"), label)
                cv2.imwrite(image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return out


def class_names() -> List[str]:
    return [name for name, _ in CLASSES]



# The panoptic set's classes (class index = position; dataset category id = index + 1):
# things, the shapes as instances, then stuff.
PANOPTIC_CLASSES: List[Tuple[str, bool, Tuple[int, int, int]]] = [
    ("red circle", True, (220, 40, 40)),
    ("blue triangle", True, (50, 70, 220)),
    ("yellow star", True, (235, 215, 40)),
    ("sky", False, (150, 190, 235)),
    ("grass", False, (70, 140, 60)),
]
PANOPTIC_SPLITS = {"train": 160, "val": 24}


def _stuff_texture(rng: np.random.Generator, size: int, colour) -> np.ndarray:
    """A smooth texture around ``colour``: (size, size, 3) uint8."""
    noise = cv2.resize(rng.random((size // 8, size // 8, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0.0, 0.03, (size, size, 3)).astype(np.float32)
    return np.clip(np.array(colour, np.float32) + 50 * (noise - 0.5) + 255 * fine, 0, 255).astype(np.uint8)


def make_panoptic_sample(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray, List[Dict]]:
    """One image (size, size, 3) uint8 RGB, its segment-id map (size, size) int32 (0: none) and
    segments ``{"id", "category_id" (class index)}``: sky above a wavy horizon, grass below,
    then 1-4 shapes, later ones occluding earlier ones."""
    image = np.zeros((size, size, 3), np.uint8)
    ids = np.zeros((size, size), np.int32)
    segments = []
    horizon = rng.uniform(0.3, 0.6) * size + 6 * np.sin(np.arange(size) / size * rng.uniform(2, 8) + rng.uniform(0, 6))
    sky = np.arange(size)[:, None] < horizon[None, :]
    things = [i for i, (_, thing, _) in enumerate(PANOPTIC_CLASSES) if thing]
    for class_id, region in ((3, sky), (4, ~sky)):
        image[region] = _stuff_texture(rng, size, PANOPTIC_CLASSES[class_id][2])[region]
        segment_id = 1000 * (class_id + 1)
        ids[region] = segment_id
        segments.append({"id": segment_id, "category_id": class_id})
    for k in range(int(rng.integers(1, 5))):
        class_id = int(rng.choice(things))
        name, _, colour = PANOPTIC_CLASSES[class_id]
        mask = _shape_mask(name.split()[1], rng, size)
        image[mask] = np.clip(np.array(colour) + rng.integers(-20, 21, 3), 0, 255).astype(np.uint8)
        segment_id = 1000 * (class_id + 1) + k + 1
        ids[mask] = segment_id
        segments.append({"id": segment_id, "category_id": class_id})
    present = set(np.unique(ids).tolist())
    return image, ids, [s for s in segments if s["id"] in present]


def generate_panoptic(root: str, size: int = 128, seed: int = 0, splits: Dict[str, int] = PANOPTIC_SPLITS) -> str:
    """Write the panoptic dataset under ``root/eov_synthetic``: ``images/<split>/*.png``,
    ``panoptic_<split>/*.png`` (id = R + 256 G + 65536 B), ``panoptic_<split>.json`` and
    ``panoptic_semseg_<split>/*.png`` (class index, uint8). Deterministic given ``seed``.

    Returns the dataset folder.
    """
    from panopticapi.utils import id2rgb

    out = os.path.join(root, "eov_synthetic")
    rng = np.random.default_rng(seed)
    categories = [{"id": i + 1, "name": name, "isthing": int(thing), "color": list(colour)}
                  for i, (name, thing, colour) in enumerate(PANOPTIC_CLASSES)]
    for split, count in splits.items():
        folders = {kind: os.path.join(out, kind) for kind in (f"images/{split}", f"panoptic_{split}", f"panoptic_semseg_{split}")}
        for folder in folders.values():
            os.makedirs(folder, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image, ids, segments = make_panoptic_sample(rng, size)
            stem = f"{split}_{i:05d}"
            semantic = np.full((size, size), IGNORE_LABEL, np.uint8)
            info = []
            for s in segments:
                mask = ids == s["id"]
                semantic[mask] = s["category_id"]
                ys, xs = np.nonzero(mask)
                info.append({"id": s["id"], "category_id": s["category_id"] + 1, "iscrowd": 0, "area": int(mask.sum()),
                             "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]})
            cv2.imwrite(os.path.join(folders[f"images/{split}"], stem + ".png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(os.path.join(folders[f"panoptic_{split}"], stem + ".png"), cv2.cvtColor(id2rgb(ids), cv2.COLOR_RGB2BGR))
            cv2.imwrite(os.path.join(folders[f"panoptic_semseg_{split}"], stem + ".png"), semantic)
            images.append({"id": i, "file_name": stem + ".png", "width": size, "height": size})
            annotations.append({"image_id": i, "file_name": stem + ".png", "segments_info": info})
        path = os.path.join(out, f"panoptic_{split}.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        os.replace(path + ".tmp", path)
    return out


def panoptic_vocabulary() -> List[Dict]:
    return [{"name": name, "isthing": thing} for name, thing, _ in PANOPTIC_CLASSES]
