"""Inference: the geometric ensemble of in-vocabulary and CLIP predictions, then the
semantic, panoptic and instance post-processings of one image's proposals."""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

# Mask elements the panoptic post-processing handles at once (a band of rows of every kept
# proposal), here and in sed.deploy's NumPy version: the band stays in cache through its few
# element-wise passes.
PANOPTIC_ELEMENTS_PER_BAND = 1 << 19


def crop_and_resize(maps: torch.Tensor, size: Tuple[int, int], height: int, width: int) -> torch.Tensor:
    """(N, Hp, Wp) maps of a padded canvas -> (N, height, width): the image's ``size`` crop,
    bilinearly resized (as detectron2's ``sem_seg_postprocess``; a view when the crop already
    has the output size, where that resize is the identity)."""
    maps = maps[:, : size[0], : size[1]]
    if tuple(size) == (height, width):
        return maps
    return F.interpolate(maps[None], size=(height, width), mode="bilinear", align_corners=False)[0]


def geometric_ensemble(in_logits: torch.Tensor, out_logits: torch.Tensor, seen: torch.Tensor,
                       alpha: float, beta: float, valid: torch.Tensor = None) -> torch.Tensor:
    """Mix the decoder's classification with the frozen CLIP's, and restore void.

    Args:
        in_logits: (B, N, T + 1) last-stage logits, void last.
        out_logits: (B, N, T + 1) CLIP-branch logits (its void column is not used).
        seen: (T,) bool, classes named in the training vocabulary.
        alpha, beta: CLIP's exponent for seen / unseen classes.
        valid: (B, N) bool or None; proposals marked False keep the decoder's prediction.
    Returns:
        (B, N, T + 1) log-probabilities, log(p + 1e-8), void last.
    """
    p_in = in_logits[..., :-1].softmax(-1)
    p_out = out_logits[..., :-1].softmax(-1)
    exponent = torch.where(seen, alpha, beta).to(p_in)  # (T,)
    exponent = exponent.expand_as(p_in)
    if valid is not None:
        exponent = exponent * valid[..., None].to(p_in)
    ensembled = (p_in.pow(1 - exponent) * p_out.pow(exponent)).log()
    void = in_logits.softmax(-1)[..., -1:]
    probs = torch.cat([ensembled.softmax(-1) * (1 - void), void], dim=-1)
    return (probs + 1e-8).log()


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """(N, T + 1) logits and (N, H, W) mask logits -> (T, H, W) class scores."""
    probs = class_logits.softmax(-1)[:, :-1]
    return torch.einsum("nt,nhw->thw", probs, mask_logits.sigmoid())


def panoptic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor, isthing: torch.Tensor, *,
                       object_mask_threshold: float, overlap_threshold: float) -> Tuple[torch.Tensor, List[Dict]]:
    """Non-overlapping segments: each pixel goes to the kept proposal with the highest
    score x mask probability; stuff segments of one class are merged.

    Args:
        class_logits: (N, T + 1); mask_logits: (N, H, W); isthing: (T,) bool flags, read on the
            host (a sequence, or a CPU tensor: a GPU tensor costs a host sync per segment).
    Returns:
        (H, W) int32 segment ids (0: none) and, per segment, ``{"id", "isthing", "category_id"}``.
    """
    scores, labels = class_logits.softmax(-1).max(-1)
    num_classes = class_logits.shape[-1] - 1
    # The kept proposals, read once (a host sync on a GPU) for everything indexed with them.
    index = (labels.ne(num_classes) & (scores > object_mask_threshold)).nonzero()[:, 0]
    scores, labels = scores[index], labels[index]
    height, width = mask_logits.shape[-2:]
    segments = torch.zeros((height, width), dtype=torch.int32, device=mask_logits.device)
    if len(labels) == 0:
        return segments, []
    kept = mask_logits if len(labels) == len(mask_logits) else mask_logits[index]
    owner = torch.empty((height, width), dtype=torch.long, device=mask_logits.device)
    owned = torch.empty((height, width), dtype=torch.bool, device=mask_logits.device)
    original_area = torch.zeros(len(labels), dtype=torch.long, device=mask_logits.device)
    rows = max(1, PANOPTIC_ELEMENTS_PER_BAND // (len(labels) * width))
    for top in range(0, height, rows):
        masks = kept[:, top : top + rows].sigmoid()
        covered = masks >= 0.5
        # Counted in int32 (a band has fewer than 2^31 pixels): a sum of booleans in the
        # default int64 first copies them into an int64 tensor (3 times slower here).
        original_area += covered.flatten(1).sum(1, dtype=torch.int32)
        # The proposal of each pixel (max's indices: the first maximum, as argmax, but
        # vectorised along this dimension on CPU; scores multiplied in place, once
        # ``covered`` holds the masks) and whether its mask covers the pixel.
        band = torch.max(masks.mul_(scores[:, None, None]), dim=0).indices
        owner[top : top + rows] = band
        owned[top : top + rows] = covered.gather(0, band[None])[0]
    # Per proposal: pixels it owns, pixels its mask covers, pixels it owns and covers.
    area = torch.bincount(owner.flatten(), minlength=len(labels)).tolist()
    original_area = original_area.tolist()
    segment_area = torch.bincount(owner[owned], minlength=len(labels)).tolist()
    segment_of, info = assign_segments(labels.tolist(), area, original_area, segment_area, isthing, overlap_threshold)
    segment_of = torch.tensor(segment_of, dtype=torch.int32, device=owner.device)
    return torch.where(owned, segment_of[owner], 0), info


def assign_segments(labels: List[int], area: List[int], original_area: List[int], segment_area: List[int],
                    isthing: Sequence[bool], overlap_threshold: float) -> Tuple[List[int], List[Dict]]:
    """The segment of each kept proposal (0: dropped): one that owns no pixel, whose mask covers
    none, or that owns less than ``overlap_threshold`` of its mask is dropped; stuff proposals of
    one class share a segment.

    Args:
        labels: class of each proposal; area: pixels it owns; original_area: pixels its mask
            covers; segment_area: pixels it owns and covers; isthing: (T,) thing flags.
    Returns:
        the segment id of each proposal, and per segment ``{"id", "isthing", "category_id"}``.
    """
    segment_of = [0] * len(labels)
    info: List[Dict] = []
    stuff_ids: Dict[int, int] = {}
    for k, label in enumerate(labels):
        if 0 in (area[k], original_area[k], segment_area[k]) or area[k] / original_area[k] < overlap_threshold:
            continue
        thing = bool(isthing[label])
        if not thing and label in stuff_ids:
            segment_of[k] = stuff_ids[label]
            continue
        segment_of[k] = len(info) + 1
        if not thing:
            stuff_ids[label] = segment_of[k]
        info.append({"id": segment_of[k], "isthing": thing, "category_id": label})
    return segment_of, info


def instance_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor, isthing: torch.Tensor, *,
                       max_detections: int, things_only: bool) -> Instances:
    """The top ``max_detections`` (proposal, class) pairs, each with its binary mask, scored by
    class probability x mean mask probability inside the mask; sorted by decreasing score.

    Args:
        class_logits: (N, T + 1); mask_logits: (N, H, W); isthing: (T,) bool.
        things_only: keep thing classes only (panoptic output on).
    """
    probs = class_logits.softmax(-1)[:, :-1]
    num_classes = probs.shape[1]
    scores, index = probs.flatten().topk(min(max_detections, probs.numel()))
    labels, proposals = index % num_classes, index // num_classes
    if things_only:
        # The kept pairs, read once (a host sync on a GPU) for the three tensors.
        kept = isthing.to(labels.device)[labels].nonzero()[:, 0]
        scores, labels, proposals = scores[kept], labels[kept], proposals[kept]
    masks = mask_logits[proposals]
    binary = (masks > 0).float()
    mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    result = Instances(mask_logits.shape[-2:])
    result.pred_masks = binary
    result.pred_boxes = Boxes(torch.zeros(len(binary), 4, device=binary.device))
    result.scores = scores * mask_scores
    result.pred_classes = labels
    order = result.scores.argsort(descending=True, stable=True)
    return result[order]
