"""The training loss: Hungarian matching of proposals to ground-truth segments after every
decoder stage, then classification, mask BCE and dice losses on sampled points.

Random draws, per stage in order (so a seeded run reproduces the reference): for each image
``torch.rand(1, P, 2)`` (matching points), then ``torch.rand(M, 3P, 2)`` and
``torch.rand(M, P - int(0.75 P), 2)`` (loss points; M matched pairs of the batch). Nothing
else draws random numbers.
"""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from scipy.optimize import linear_sum_assignment
from torch import nn


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``maps`` (M, h, w) at ``coords`` (M, P, 2) in [0, 1] (x, y)
    -> (M, P) float32; zero outside. Half-precision maps are sampled in float32, as autocast
    does (the coordinates would lose their sub-pixel part in half precision)."""
    grid = (2.0 * coords.float() - 1.0).unsqueeze(2)
    return F.grid_sample(maps.unsqueeze(1).float(), grid, align_corners=False)[:, 0, :, 0]


def sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of every prediction (N, P) against every target (G, P) -> (N, G)."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.t() + neg @ (1 - targets).t()) / logits.shape[1]


def dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction (N, P) against every target (G, P) -> (N, G)."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class SetCriterion(nn.Module):
    """Per-stage Hungarian-matched losses, ``s{i}_loss_ce/_mask/_dice`` (weighted)."""

    def __init__(self, *, num_classes: int, class_weight: float, mask_weight: float, dice_weight: float,
                 no_object_weight: float, num_points: int, oversample_ratio: float, importance_sample_ratio: float):
        super().__init__()
        self.num_classes = num_classes
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight)
        self.register_load_state_dict_pre_hook(self._keep_empty_weight)

    @staticmethod
    def _keep_empty_weight(module, state_dict, prefix, *args):
        """``empty_weight`` follows the config (NUM_CLASSES + 1 class weights, the void's last), not
        the checkpoint: a model trained on another vocabulary loads for fine-tuning on this one."""
        state_dict[prefix + "empty_weight"] = module.empty_weight

    @torch.no_grad()
    def match(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
              targets: List[Dict[str, torch.Tensor]]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per image, (proposal indices, target indices) minimising
        class_weight * (-p(class)) + mask_weight * BCE + dice_weight * dice."""
        indices = []
        for logits, masks, target in zip(class_logits, mask_logits, targets):
            coords = torch.rand(1, self.num_points, 2, device=masks.device)
            labels, gt = target["labels"], target["masks"]
            probs = logits.float().softmax(-1)[:, labels]
            pred = point_sample(masks.float(), coords.expand(masks.shape[0], -1, -1))
            gt = point_sample(gt.float(), coords.expand(gt.shape[0], -1, -1))
            cost = (self.mask_weight * sigmoid_ce_cost(pred, gt) - self.class_weight * probs
                    + self.dice_weight * dice_cost(pred, gt))
            rows, cols = linear_sum_assignment(cost.cpu())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    @torch.no_grad()
    def loss_points(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """(M, h, w) -> (M, P, 2) points: the most uncertain (|logit| smallest) of 3P random
        candidates, then random ones."""
        m = mask_logits.shape[0]
        candidates = torch.rand(m, int(self.num_points * self.oversample_ratio), 2, device=mask_logits.device)
        uncertainty = -point_sample(mask_logits, candidates).abs()
        num_uncertain = int(self.importance_sample_ratio * self.num_points)
        top = uncertainty.topk(num_uncertain, dim=1).indices
        picked = candidates.gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
        rand = torch.rand(m, self.num_points - num_uncertain, 2, device=mask_logits.device)
        return torch.cat([picked, rand], dim=1)

    def stage_losses(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
                     targets: List[Dict[str, torch.Tensor]], num_masks: float) -> Dict[str, torch.Tensor]:
        """Losses of one stage's outputs (B, N, T + 1) and (B, N, h, w)."""
        indices = self.match(class_logits, mask_logits, targets)
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(class_logits.device)
        src = torch.cat([src for src, _ in indices]).to(class_logits.device)

        target_classes = torch.full(class_logits.shape[:2], self.num_classes, dtype=torch.int64, device=class_logits.device)
        target_classes[batch, src] = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)])
        # In float32 also in a model cast to half precision (the class weights are a buffer).
        loss_ce = F.cross_entropy(class_logits.transpose(1, 2).float(), target_classes,
                                  self.empty_weight.float())

        pred = mask_logits[batch, src]  # (M, h, w)
        gt = torch.cat([t["masks"][j.to(t["masks"].device)] for t, (_, j) in zip(targets, indices)]).to(pred)
        coords = self.loss_points(pred)
        with torch.no_grad():
            labels = point_sample(gt, coords)
        logits = point_sample(pred, coords)
        loss_mask = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum() / num_masks
        probs = logits.sigmoid()
        dice = 1 - (2 * (probs * labels).sum(-1) + 1) / (probs.sum(-1) + labels.sum(-1) + 1)
        return {"loss_ce": self.class_weight * loss_ce, "loss_mask": self.mask_weight * loss_mask,
                "loss_dice": self.dice_weight * dice.sum() / num_masks}

    def forward(self, class_logits: List[torch.Tensor], mask_logits: List[torch.Tensor],
                targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """
        Args:
            class_logits, mask_logits: per stage (B, N, T + 1) and (B, N, h, w).
            targets: per image ``labels`` (n,) int64 and ``masks`` (n, Hp, Wp) bool/float.
        Returns:
            ``s{i}_loss_ce``, ``s{i}_loss_mask``, ``s{i}_loss_dice`` for every stage i.
        """
        num_masks = float(sum(len(t["labels"]) for t in targets))
        if comm.get_world_size() > 1:
            # Averaged over the processes: one round trip through the device per step.
            total = torch.tensor(num_masks, device=class_logits[0].device)
            torch.distributed.all_reduce(total)
            num_masks = total.item() / comm.get_world_size()
        num_masks = max(num_masks, 1.0)
        losses = {}
        for i, (logits, masks) in enumerate(zip(class_logits, mask_logits)):
            for name, value in self.stage_losses(logits, masks, targets, num_masks).items():
                losses[f"s{i}_{name}"] = value
        return losses
