"""Training loss: per-class binary cross-entropy on the final and auxiliary outputs."""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F


def one_hot_targets(labels: torch.Tensor, num_classes: int, ignore_value: int) -> torch.Tensor:
    """(B, H, W) train ids -> (B, T, H, W) float one-hot; ignored pixels are all zero."""
    valid = labels != ignore_value
    if bool(((labels < 0) | (labels >= num_classes))[valid].any()):
        bad = torch.unique(labels[valid & ((labels < 0) | (labels >= num_classes))]).tolist()
        raise ValueError(
            f"Labels {bad} are outside the {num_classes}-class vocabulary (ignore value "
            f"{ignore_value}): check the dataset and MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON"
        )
    onehot = F.one_hot(torch.where(valid, labels, 0), num_classes).permute(0, 3, 1, 2)
    return (onehot * valid.unsqueeze(1)).float()


def sem_seg_losses(
    logits: Sequence[torch.Tensor], labels: torch.Tensor, ignore_value: int
) -> Dict[str, torch.Tensor]:
    """
    Args:
        logits: final then auxiliary logit maps, each (B, T, h_i, w_i).
        labels: (B, H, W) train ids with ``ignore_value``.
    Returns:
        ``loss_sem_seg_i``: mean BCE of output i, up-sampled (bilinear) to the label size.
    """
    targets = one_hot_targets(labels, logits[0].shape[1], ignore_value)
    return {
        f"loss_sem_seg_{i}": F.binary_cross_entropy_with_logits(
            F.interpolate(x, size=labels.shape[-2:], mode="bilinear", align_corners=False), targets
        )
        for i, x in enumerate(logits)
    }
