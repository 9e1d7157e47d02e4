"""Evaluation: detectron2's SemSegEvaluator definitions for mIoU, and the evaluators of each
dataset type (``build_evaluators``)."""
from typing import Callable, Dict, List

import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

from .datasets import load_sem_seg_label
from .panoptic_evaluation import InstanceSegEvaluator, PanopticEvaluator


class SEDSemSegEvaluator(SemSegEvaluator):
    """mIoU, fwIoU, mACC, pACC and per-class IoU/accuracy over the split's confusion matrix;
    classes absent from the ground truth are left out of the means. For datasets with a
    ``background_from`` index (PAS-20b), predictions at or above it count as that class. The
    ground truth is read with the metadata's ``sem_seg_loading_fn`` where a split has one
    (custom panoptic splits: from the panoptic PNGs), else as a label map.
    """

    # What ``process`` accumulates (saved and resumed by ResumableEvaluator).
    RESUMABLE_STATE = ("_conf_matrix", "_b_conf_matrix", "_predictions")

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir=None):
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir,
                         sem_seg_loading_fn=MetadataCatalog.get(dataset_name).get("sem_seg_loading_fn",
                                                                                  load_sem_seg_label))
        self._compute_boundary_iou = False
        self._background_from = MetadataCatalog.get(dataset_name).get("background_from", -1)

    def process(self, inputs, outputs):
        if self._background_from >= 0:
            outputs = [{"sem_seg": self._merge_background(o["sem_seg"])} for o in outputs]
        super().process(inputs, outputs)

    def _merge_background(self, probs):
        """(T, H, W) scores -> (background_from + 1, H, W), the last being the max over the
        classes from ``background_from`` on: the argmax then lands on it exactly when it
        would land on any of them."""
        head, tail = probs[: self._background_from], probs[self._background_from :]
        return torch.cat([head, tail.max(dim=0, keepdim=True).values])


def semantic_evaluators(cfg, dataset_name: str, output_dir: str) -> List:
    return [SEDSemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir)]


def panoptic_evaluators(cfg, dataset_name: str, output_dir: str) -> List:
    """PQ, and with the matching outputs switched on, mIoU and mask AP (where the split has an
    instance JSON): what the model's MODEL.EOV_SEG.TEST switches produce."""
    test = cfg.MODEL.EOV_SEG.TEST
    evaluators = []
    if test.PANOPTIC_ON:
        evaluators.append(PanopticEvaluator(dataset_name, output_dir=output_dir))
    if test.SEMANTIC_ON:
        evaluators.append(SEDSemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir))
    if test.INSTANCE_ON and MetadataCatalog.get(dataset_name).get("json_file"):
        evaluators.append(InstanceSegEvaluator(dataset_name, distributed=True, output_dir=output_dir))
    return evaluators


# Metadata evaluator_type -> the evaluators of such a split.
EVALUATORS: Dict[str, Callable] = {
    "sem_seg": semantic_evaluators,
    "coco_panoptic_seg": panoptic_evaluators,
    "ade20k_panoptic_seg": panoptic_evaluators,
    "cityscapes_panoptic_seg": panoptic_evaluators,
}


def build_evaluators(cfg, dataset_name: str, output_dir: str) -> List:
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", "")
    if kind not in EVALUATORS:
        raise ValueError(f"No evaluator for dataset '{dataset_name}' (evaluator_type {kind!r}); "
                         f"known types: {sorted(EVALUATORS)}")
    return EVALUATORS[kind](cfg, dataset_name, output_dir)
