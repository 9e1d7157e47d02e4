"""What the demos (tools/demo.py on the command line, tools/web_demo.py in the browser) make of
a segmentation: the segments of the task shown, the overlay picture and the output files, in
one place so that both give the same files for the same image and vocabulary.

Tasks (each model family lists its own, ``ModelFamily.tasks``): ``semantic`` (a class per pixel; either model), ``panoptic`` (EOV-Seg's segments: stuff
regions and thing instances without overlaps) and ``instance`` (EOV-Seg's thing instances
scoring at least a confidence threshold).
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np
import torch
from PIL import Image

from .family import ModelFamily, families_with_task
from .predictor import Panoptic, PanopticSegment, Segmentation, panoptic_result
from .visualization import overlay_with_legend, panoptic_overlay

DEFAULT_CONFIDENCE_THRESHOLD = 0.5  # instance task: the lowest score shown (detectron2's demo default)


def check_task(task: str, family: ModelFamily) -> None:
    """Raise a ValueError naming the choices if ``family`` cannot show ``task`` (and the
    families that can)."""
    if task not in family.tasks:
        others = [f.title for f in families_with_task(task)]
        raise ValueError(f"{family.title} shows {' / '.join(family.tasks)} segmentation, not {task!r}"
                         + (f"; {task} output needs a config of {' or '.join(others)}" if others else ""))


def read_image(path) -> Optional[np.ndarray]:
    """(H, W, 3) RGB uint8, or None if unreadable. OpenCV applies the EXIF orientation, turns
    greyscale into RGB, drops an alpha channel and scales 16 bits to 8."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def class_regions(result: Segmentation) -> Panoptic:
    """The semantic task's segments: one per class present (id = class index + 1), scored as
    panoptic segments are (the mean share of the class in its pixels' class scores)."""
    labels = torch.from_numpy(result.labels)
    info = [{"id": c + 1, "category_id": c, "isthing": result.isthing[c]} for c in labels.unique().tolist()]
    return panoptic_result(labels.int() + 1, info, result.probabilities)


def instance_segments(result: Segmentation, confidence_threshold: float) -> Panoptic:
    """The instance task's segments: the instances (``result.instances``) scoring at least
    ``confidence_threshold``, each pixel to the highest-scoring instance covering it; an
    instance left without pixels is dropped. Scores are the instances' scores."""
    instances = result.instances
    masks, scores, classes = instances.pred_masks.numpy() > 0, instances.scores.numpy(), instances.pred_classes.numpy()
    ids = np.zeros(instances.image_size, np.int32)
    segments: List[PanopticSegment] = []
    for k in np.argsort(-scores, kind="stable"):
        if scores[k] < confidence_threshold:
            break
        free = masks[k] & (ids == 0)
        if free.any():
            ids[free] = len(segments) + 1
            category = int(classes[k])
            segments.append(PanopticSegment(len(segments) + 1, category, result.isthing[category], float(scores[k]),
                                            int(free.sum())))
    return Panoptic(ids, segments)


SEGMENTS: Dict[str, Callable[[Segmentation, float], Panoptic]] = {
    "semantic": lambda result, confidence_threshold: class_regions(result),
    "panoptic": lambda result, confidence_threshold: result.panoptic,
    "instance": instance_segments,
}


@dataclass
class DemoOutput:
    overlay: np.ndarray  # (H, W + legend width, 3) RGB uint8
    segments: Panoptic  # the task's segments (semantic: one per class present)
    files: Dict[str, Path] = field(default_factory=dict)  # kind -> file written (see write_outputs)


def write_panoptic(out_dir: Path, name: str, panoptic: Panoptic, class_names: List[str],
                   isthing: List[bool]) -> Dict[str, Path]:
    """NAME_panoptic.png (ids as R + 256 G + 65536 B) and NAME_panoptic.json, as COCO panoptic
    predictions (category ids are class indices)."""
    ids = panoptic.ids.astype(np.uint32)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
    files = {"panoptic": out_dir / f"{name}_panoptic.png", "panoptic_json": out_dir / f"{name}_panoptic.json"}
    Image.fromarray(rgb).save(files["panoptic"])
    segments = []
    for s in panoptic.segments:
        ys, xs = np.nonzero(panoptic.ids == s.id)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        segments.append({"id": s.id, "category_id": s.category_id, "isthing": int(s.isthing), "iscrowd": 0,
                         "score": round(s.score, 4), "area": s.area, "bbox": bbox})
    document = {"annotations": [{"image_id": name, "file_name": files["panoptic"].name, "segments_info": segments}],
                "categories": [{"id": i, "name": n, "isthing": int(t)}
                               for i, (n, t) in enumerate(zip(class_names, isthing))]}
    files["panoptic_json"].write_text(json.dumps(document, indent=1, ensure_ascii=False))
    return files


def write_outputs(out_dir: Path, name: str, image: np.ndarray, result: Segmentation, *, task: str,
                  confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
                  save_probabilities: bool = False) -> DemoOutput:
    """Every output file of one image ((H, W, 3) RGB uint8) under ``out_dir``, as ``files``:
    ``overlay`` NAME_overlay.png (semantic: class colours; panoptic, instance: a colour per
    segment, thing instances outlined and labelled "class score"; a legend of the classes
    present), ``labels`` NAME_labels.png (class index per pixel, uint8, uint16 beyond 256
    classes), ``classes`` NAME_classes.json (index -> class name); for the panoptic and
    instance tasks ``panoptic`` / ``panoptic_json`` (:func:`write_panoptic`); with
    ``save_probabilities`` ``probabilities`` NAME_probs.npy ((T, H, W) float32)."""
    segments = SEGMENTS[task](result, confidence_threshold)
    files = {}
    if task == "semantic":
        overlay = overlay_with_legend(image, result.labels, result.class_names)
    else:
        overlay = panoptic_overlay(image, segments, result.class_names)
        files.update(write_panoptic(out_dir, name, segments, result.class_names, result.isthing))
    files["overlay"] = out_dir / f"{name}_overlay.png"
    cv2.imwrite(str(files["overlay"]), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    files["labels"] = out_dir / f"{name}_labels.png"
    cv2.imwrite(str(files["labels"]), result.labels.astype(np.uint8 if len(result.class_names) <= 256 else np.uint16))
    files["classes"] = out_dir / f"{name}_classes.json"
    table = {str(i): n for i, n in enumerate(result.class_names)}
    files["classes"].write_text(json.dumps(table, indent=1, ensure_ascii=False))
    if save_probabilities:
        files["probabilities"] = out_dir / f"{name}_probs.npy"
        np.save(files["probabilities"], result.probabilities.numpy())
    return DemoOutput(overlay, segments, files)
