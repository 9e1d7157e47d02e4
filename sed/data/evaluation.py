"""Semantic-segmentation evaluation (detectron2's SemSegEvaluator definitions)."""
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

from .datasets import load_sem_seg_label


class SEDSemSegEvaluator(SemSegEvaluator):
    """mIoU, fwIoU, mACC, pACC and per-class IoU/accuracy over the split's confusion matrix;
    classes absent from the ground truth are left out of the means. For datasets with a
    ``background_from`` index (PAS-20b), predictions at or above it count as that class.
    """

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir=None):
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir,
                         sem_seg_loading_fn=load_sem_seg_label)
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
