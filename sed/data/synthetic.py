"""The embedded default dataset: coloured shapes on textured backgrounds.

Written in the on-disk layout of the real benchmarks (RGB PNG images, single-channel uint8
PNG label maps of train ids, 255 = ignore on a thin band along every shape's outline), so it
runs through exactly the same registration, data loading, training and evaluation code.
"""
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


def _shape_mask(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    radius = int(rng.integers(size // 7, size // 4))
    cx, cy = (int(v) for v in rng.integers(radius, size - radius, 2))
    if kind == "circle":
        cv2.circle(mask, (cx, cy), radius, 1, -1)
    elif kind == "square":
        cv2.rectangle(mask, (cx - radius, cy - radius), (cx + radius, cy + radius), 1, -1)
    elif kind == "triangle":
        pts = np.array([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)])
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    else:  # star
        angles = np.linspace(-np.pi / 2, 3 * np.pi / 2, 10, endpoint=False)
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
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

