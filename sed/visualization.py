"""Pictures of segmentations: colour overlay with a legend of the classes present."""
from typing import List, Sequence

import cv2
import numpy as np

from .data.datasets import palette


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                        alpha: float = 0.55, max_entries: int = 30) -> np.ndarray:
    """Blend class colours over ``image`` (H, W, 3 RGB uint8) and add a legend on the right
    listing the classes present, largest first. Returns an RGB uint8 picture."""
    colours = np.array(palette(len(class_names)), dtype=np.uint8)
    blended = (image.astype(np.float32) * (1 - alpha) + colours[labels] * alpha).astype(np.uint8)
    present = np.bincount(labels.ravel(), minlength=len(class_names))
    order = [int(i) for i in np.argsort(-present) if present[i] > 0][:max_entries]
    return np.concatenate([blended, _legend(image.shape[0], order, class_names, colours)], axis=1)


def _legend(height: int, order: List[int], class_names: Sequence[str], colours: np.ndarray) -> np.ndarray:
    scale, row = 0.45, 20
    names = [class_names[i].split(", ")[0] for i in order]
    width = 40 + max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for n in names)
    panel = np.full((max(height, row * len(order) + 10), width, 3), 255, np.uint8)
    for k, (i, name) in enumerate(zip(order, names)):
        y = 8 + k * row
        cv2.rectangle(panel, (8, y), (24, y + 14), colours[i].tolist(), -1)
        cv2.rectangle(panel, (8, y), (24, y + 14), (0, 0, 0), 1)
        cv2.putText(panel, name, (32, y + 12), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if panel.shape[0] > height:
        panel = cv2.resize(panel, (panel.shape[1] * height // panel.shape[0], height), interpolation=cv2.INTER_AREA)
    return panel
