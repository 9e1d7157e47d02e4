"""Pictures of segmentations: colour overlays with a legend of the classes present, semantic
(one colour per class) or panoptic (one colour per segment, thing instances outlined and
labelled with class and score)."""
from typing import List, Sequence

import cv2
import numpy as np

from .data.datasets import palette

FONT = cv2.FONT_HERSHEY_SIMPLEX


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                        alpha: float = 0.55, max_entries: int = 30) -> np.ndarray:
    """Blend class colours over ``image`` (H, W, 3 RGB uint8) by ``labels`` (H, W) class
    indices and add a legend on the right listing the classes present, largest first.
    Returns an RGB uint8 picture (H, W + legend width, 3)."""
    colours = class_colours(len(class_names))
    return _with_legend(_blend(image, colours[labels], alpha), labels.ravel(), class_names, colours, max_entries)


def panoptic_overlay(image: np.ndarray, panoptic, class_names: Sequence[str], alpha: float = 0.55,
                     max_entries: int = 30) -> np.ndarray:
    """Blend one colour per segment of ``panoptic`` (a :class:`sed.predictor.Panoptic`: ids
    (H, W), segments) over ``image`` (H, W, 3 RGB uint8): stuff in its class colour, each thing
    instance in a shade of it, outlined and labelled "class score". A legend on the right lists
    the classes present, largest first. Returns an RGB uint8 picture (H, W + legend width, 3)."""
    colours = class_colours(len(class_names))
    segment_colours = np.zeros((int(panoptic.ids.max(initial=0)) + 1, 3), np.uint8)
    # each thing instance: its class colour mixed with black (< 0) or white (> 0)
    mix = np.random.default_rng(0).uniform(-0.4, 0.4, len(segment_colours))
    for s in panoptic.segments:
        t, colour = (mix[s.id] if s.isthing else 0.0), colours[s.category_id].astype(np.float32)
        segment_colours[s.id] = colour * (1 - abs(t)) + (255 * abs(t) if t > 0 else 0)
    unlabelled = panoptic.ids == 0
    blended = _blend(image, segment_colours[panoptic.ids], alpha)
    blended[unlabelled] = image[unlabelled]
    for s in panoptic.segments:
        if s.isthing:
            _outline_and_label(blended, panoptic.ids == s.id, f"{short_name(class_names[s.category_id])} {s.score:.2f}")
    pixel_classes = np.concatenate([np.full(s.area, s.category_id) for s in panoptic.segments] or [np.zeros(0, int)])
    return _with_legend(blended, pixel_classes.astype(np.int64), class_names, colours, max_entries)


def highlight_segment(overlay: np.ndarray, ids: np.ndarray, segment_id: int, dim: float = 0.3) -> np.ndarray:
    """``overlay`` (H, W + legend width, 3) RGB uint8 with the segment ``segment_id`` of ``ids``
    (H, W) picked out: the rest of the picture darkened to ``dim`` of its brightness, the
    segment outlined in yellow; the legend is kept as it is."""
    height, width = ids.shape
    mask = ids == segment_id
    region = overlay[:height, :width].copy()
    region[~mask] = (region[~mask] * dim).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(region, contours, -1, (255, 255, 0), max(1, min(height, width) // 150))
    return np.concatenate([region, overlay[:height, width:]], axis=1)


def class_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB, the first skipped (black)."""
    return np.array(palette(num_classes + 1)[1:], dtype=np.uint8)


def short_name(name: str) -> str:
    """The first synonym of a class name."""
    return name.replace(", ", ",").split(",")[0]


def _blend(image: np.ndarray, colour_map: np.ndarray, alpha: float) -> np.ndarray:
    return (image.astype(np.float32) * (1 - alpha) + colour_map * alpha).astype(np.uint8)


def _outline_and_label(picture: np.ndarray, mask: np.ndarray, text: str) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(picture, contours, -1, (255, 255, 255), 1)
    ys, xs = np.nonzero(mask)
    (w, h), _ = cv2.getTextSize(text, FONT, 0.4, 1)
    x = int(min(max(xs.min(), 0), max(picture.shape[1] - w - 2, 0)))
    y = int(min(max(ys.min(), h + 2), picture.shape[0] - 1))
    cv2.rectangle(picture, (x, y - h - 3), (x + w + 2, y), (0, 0, 0), -1)
    cv2.putText(picture, text, (x + 1, y - 2), FONT, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def _with_legend(picture: np.ndarray, pixel_classes: np.ndarray, class_names: Sequence[str], colours: np.ndarray,
                 max_entries: int) -> np.ndarray:
    present = np.bincount(pixel_classes, minlength=len(class_names))
    order = [int(i) for i in np.argsort(-present, kind="stable") if present[i] > 0][:max_entries]
    return np.concatenate([picture, _legend(picture.shape[0], order, class_names, colours)], axis=1)


def _legend(height: int, order: List[int], class_names: Sequence[str], colours: np.ndarray) -> np.ndarray:
    scale, row = 0.45, 20
    names = [short_name(class_names[i]) for i in order]
    width = 40 + max([cv2.getTextSize(n, FONT, scale, 1)[0][0] for n in names] or [0])
    panel = np.full((max(height, row * len(order) + 10), width, 3), 255, np.uint8)
    for k, (i, name) in enumerate(zip(order, names)):
        y = 8 + k * row
        cv2.rectangle(panel, (8, y), (24, y + 14), colours[i].tolist(), -1)
        cv2.rectangle(panel, (8, y), (24, y + 14), (0, 0, 0), 1)
        cv2.putText(panel, name, (32, y + 12), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if panel.shape[0] > height:
        panel = cv2.resize(panel, (panel.shape[1] * height // panel.shape[0], height), interpolation=cv2.INTER_AREA)
    return panel
