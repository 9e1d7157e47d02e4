"""Python API: segment images with any vocabulary.

    from sed import SEDPredictor
    predictor = SEDPredictor.from_config_file("configs/convnextB_768.yaml", weights="model.pth")
    result = predictor(image_rgb, ["cat", "dog, puppy", "sky"])
    result.labels        # (H, W) int64 indices into the vocabulary
    result.probabilities # (T, H, W) float32

The model is built and its weights loaded once; a new vocabulary only computes (and caches)
its text embeddings.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .config import add_project_config

VOCABULARY_DIR = Path(__file__).resolve().parents[1] / "datasets"
BENCHMARK_VOCABULARIES = ("ade150", "ade847", "pc59", "pc459", "voc20", "voc20b", "coco")


@dataclass
class Segmentation:
    labels: np.ndarray  # (H, W) int64, index into class_names
    probabilities: torch.Tensor  # (T, H, W) float32
    class_names: List[str]


def resolve_vocabulary(spec: Union[str, Sequence[str]]) -> List[str]:
    """Class names from a benchmark name (``ade150``...), a file (JSON list, or one class per
    line), or the names themselves. ", " inside a name separates synonyms."""
    names = [spec] if isinstance(spec, str) else list(spec)
    if len(names) == 1:
        only = names[0]
        if only in BENCHMARK_VOCABULARIES:
            return json.loads((VOCABULARY_DIR / f"{only}.json").read_text(encoding="utf-8"))
        if os.path.isfile(only):
            text = Path(only).read_text(encoding="utf-8")
            names = json.loads(text) if text.lstrip().startswith("[") else text.splitlines()
    names = [n for n in names if n.strip()]
    if not names:
        raise ValueError("The vocabulary is empty: give class names, a vocabulary file or one of "
                         f"{', '.join(BENCHMARK_VOCABULARIES)}")
    return names


def load_config(config_file: str, weights: str = "", opts: Sequence[str] = ()) -> CfgNode:
    cfg = get_cfg()
    add_project_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if weights:
        cfg.MODEL.WEIGHTS = weights
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SEM_SEG_HEAD.POOLING_SIZES = [1, 1]  # as in every published evaluation
    cfg.freeze()
    return cfg


class SEDPredictor:
    """Build once, then segment RGB images (H, W, 3) uint8 with any vocabulary."""

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        if cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)

    @classmethod
    def from_config_file(cls, config_file: str, weights: str = "", opts: Sequence[str] = ()) -> "SEDPredictor":
        return cls(load_config(config_file, weights, opts))

    def __call__(self, image: np.ndarray, vocabulary: Union[str, Sequence[str]]) -> Segmentation:
        return self.predict_batch([image], vocabulary)[0]

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray], vocabulary: Union[str, Sequence[str]]) -> List[Segmentation]:
        names = resolve_vocabulary(vocabulary)
        self.model.test_class_names = names
        inputs = []
        for image in images:
            resized = self.resize.get_transform(image).apply_image(image)
            inputs.append({"image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
                           "height": image.shape[0], "width": image.shape[1]})
        results = []
        for out in self.model(inputs):
            probs = out["sem_seg"].float().cpu()
            results.append(Segmentation(probs.argmax(0).numpy(), probs, names))
        return results
