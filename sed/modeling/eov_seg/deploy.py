"""EOV-Seg outside PyTorch (:class:`sed.deploy.ExportedModel`): the pre-processing of its
graph's input, its vocabulary inputs, and in NumPy the post-processing that
``EOV_SEG.inference`` does after the network.

Pre-processing (:func:`resize`, then :func:`preprocess`): the shortest edge resized to
``INPUT.MIN_SIZE_TEST`` (the longest at most ``INPUT.MAX_SIZE_TEST``; detectron2's
``ResizeShortestEdge``, as the predictor and the evaluation), ``(x - PIXEL_MEAN) / PIXEL_STD``
per channel, then zeros at the bottom and right up to multiples of ``SIZE_DIVISIBILITY``.
:func:`postprocess` crops the padding off, resizes to the wanted output size and runs the
semantic, panoptic and instance post-processing.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence, Tuple

import numpy as np
from detectron2.data import transforms as T

from ...clip.text import PROMPT_ENSEMBLES
from ...deploy import image_to_chw
from ...vocabulary import Vocabulary
from . import inference as torch_inference
from .meta_arch import seen_classes
from .text_classifier import names_index


def resize(image: np.ndarray, metadata: dict) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the model's input size (the shortest-edge resize of the predictor)."""
    transform = T.ResizeShortestEdge(metadata["min_size_test"], metadata["max_size_test"])
    return transform.get_transform(image).apply_image(image)


def preprocess(image: np.ndarray, metadata: dict) -> Tuple[np.ndarray, Tuple[int, int]]:
    """(H, W, 3) uint8 RGB at the model's input size -> the graph's ``image`` input (3, Hp, Wp)
    float32, normalised per channel and zero-padded at the bottom and right to multiples of
    ``size_divisibility``, and (H, W)."""
    height, width = image.shape[:2]
    mean = np.asarray(metadata["pixel_mean"], np.float32)[:, None, None]
    std = np.asarray(metadata["pixel_std"], np.float32)[:, None, None]
    div = metadata["size_divisibility"]
    padded = np.zeros((3, -(-height // div) * div, -(-width // div) * div), np.float32)
    padded[:, :height, :width] = (image_to_chw(image) - mean) / std
    return padded, (height, width)


def vocabulary_inputs(embeddings: np.ndarray, vocabulary: Vocabulary, metadata: dict) -> Dict[str, np.ndarray]:
    """The graph's text inputs for ``vocabulary`` from its (S, D) name embeddings
    (:func:`sed.deploy.text_embeddings`): ``names`` (S, D), ``name_index`` (T, K) rows of each
    class's names, ``seen`` (T,) whether a class shares a name with the training vocabulary
    (stored in the file), for the geometric ensemble."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    counts = [len(PROMPT_ENSEMBLES["per_name"].split(name)) for name in vocabulary.names]
    if embeddings.shape[0] != sum(counts):
        raise ValueError(f"{embeddings.shape[0]} name embeddings for the {sum(counts)} names of the vocabulary")
    return {"names": embeddings, "name_index": names_index(counts).numpy(),
            "seen": np.array(seen_classes(metadata["train_class_names"], vocabulary.names), dtype=bool)}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 logistic function in one new array (its passes in place: no temporaries)."""
    out = np.negative(x, dtype=np.float32)
    np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def _source_index(out_size: int, in_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sampling along one axis (align_corners False, as ``F.interpolate``): the two
    source indices of each output index and the second one's weight."""
    scale = np.float32(in_size) / np.float32(out_size)
    real = np.maximum(scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    low = real.astype(np.int64)
    return low, low + (low < in_size - 1), (real - low).astype(np.float32)


def bilinear_resize(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, h, w) -> (N, height, width), bilinear with align_corners False (``F.interpolate``)."""
    y0, y1, wy = _source_index(height, maps.shape[1])
    x0, x1, wx = _source_index(width, maps.shape[2])
    rows = [maps[:, y] for y in (y0, y1)]
    across = [r[:, :, x0] * (1 - wx) + r[:, :, x1] * wx for r in rows]
    return across[0] * (1 - wy)[:, None] + across[1] * wy[:, None]


def crop_and_resize(maps: np.ndarray, size: Tuple[int, int], height: int, width: int) -> np.ndarray:
    """(N, Hp, Wp) maps of the padded canvas -> the image's ``size`` crop at (height, width)."""
    maps = maps[:, : size[0], : size[1]]
    return maps if tuple(size) == (height, width) else bilinear_resize(maps, height, width)


def semantic_inference(class_logprobs: np.ndarray, mask_logits: np.ndarray) -> np.ndarray:
    """(N, T + 1) and (N, H, W) -> (T, H, W) class scores: class probability x mask probability,
    summed over the proposals."""
    probs = _softmax(class_logprobs)[:, :-1]
    n, h, w = mask_logits.shape
    return (probs.T @ _sigmoid(mask_logits).reshape(n, h * w)).reshape(-1, h, w)


def panoptic_inference(class_logprobs: np.ndarray, mask_logits: np.ndarray, isthing: np.ndarray, *,
                       object_mask_threshold: float, overlap_threshold: float,
                       threads: int = 0) -> Tuple[np.ndarray, List[dict]]:
    """Non-overlapping segments: proposals whose best class is not void and scores above
    ``object_mask_threshold`` compete for each pixel (score x mask probability); a proposal
    keeps its pixels covered by its mask (probability >= 0.5) if they are at least
    ``overlap_threshold`` of its mask; stuff segments of one class are merged. As PyTorch's
    (``sed.modeling.eov_seg.inference``), a band of rows at a time, the bands on ``threads``
    threads (0: one per CPU).

    Returns:
        (H, W) int32 segment ids (0: none) and, per segment, ``{"id", "isthing", "category_id"}``.
    """
    probs = _softmax(class_logprobs)
    scores, labels = probs.max(axis=-1), probs.argmax(axis=-1)
    keep = (labels != probs.shape[-1] - 1) & (scores > object_mask_threshold)
    height, width = mask_logits.shape[1:]
    if not keep.any():
        return np.zeros((height, width), np.int32), []
    scores, labels, kept = scores[keep], labels[keep], None if keep.all() else np.flatnonzero(keep)
    owner = np.empty((height, width), np.int64)
    owned = np.empty((height, width), bool)
    rows = max(1, torch_inference.PANOPTIC_ELEMENTS_PER_BAND // (len(labels) * width))

    def band(top: int) -> np.ndarray:
        """Fills the band's owner and owned; returns the pixels each mask covers in it."""
        logits = mask_logits[:, top : top + rows]
        masks = _sigmoid(logits if kept is None else logits[kept])
        covered = masks >= 0.5
        masks *= scores[:, None, None]
        owner[top : top + rows] = best = masks.argmax(axis=0)
        owned[top : top + rows] = np.take_along_axis(covered, best[None], axis=0)[0]
        return np.count_nonzero(covered.reshape(len(labels), -1), axis=1)

    tops = range(0, height, rows)
    with ThreadPoolExecutor(min(threads or os.cpu_count() or 1, len(tops))) as pool:  # NumPy frees the GIL
        original_area = sum(pool.map(band, tops))
    area = np.bincount(owner.ravel(), minlength=len(labels))
    segment_area = np.bincount(owner[owned], minlength=len(labels))
    segment_of, info = torch_inference.assign_segments(labels.tolist(), area.tolist(), original_area.tolist(),
                                                       segment_area.tolist(), isthing, overlap_threshold)
    segment_of = np.asarray(segment_of, np.int32)
    return np.where(owned, segment_of[owner], 0).astype(np.int32), info


def instance_inference(class_logprobs: np.ndarray, mask_logits: np.ndarray, isthing: np.ndarray, *,
                       max_detections: int, things_only: bool) -> Dict[str, np.ndarray]:
    """The top ``max_detections`` (proposal, class) pairs with their binary masks, scored by
    class probability x mean mask probability inside the mask, by decreasing score.

    Returns:
        ``pred_masks`` (K, H, W) float32 0/1, ``scores`` (K,), ``pred_classes`` (K,) int64.
    """
    probs = _softmax(class_logprobs)[:, :-1]
    num_classes = probs.shape[1]
    flat = probs.ravel()
    index = np.argsort(-flat, kind="stable")[: min(max_detections, flat.size)]
    scores, labels, proposals = flat[index], index % num_classes, index // num_classes
    if things_only:
        keep = np.asarray(isthing, bool)[labels]
        scores, labels, proposals = scores[keep], labels[keep], proposals[keep]
    masks = mask_logits[proposals]
    binary = (masks > 0).astype(np.float32)
    inside = (_sigmoid(masks) * binary).reshape(len(masks), -1).sum(1)
    mask_scores = inside / (binary.reshape(len(masks), -1).sum(1) + 1e-6)
    scores = scores * mask_scores
    order = np.argsort(-scores, kind="stable")
    return {"pred_masks": binary[order], "scores": scores[order], "pred_classes": labels[order]}


def postprocess(class_logprobs: np.ndarray, mask_logits: np.ndarray, image_size: Tuple[int, int],
                        output_size: Tuple[int, int], isthing: Sequence[bool], metadata: dict,
                        threads: int = 0, **switches: bool) -> dict:
    """EOV-Seg's outputs from its graph's: what ``EOV_SEG.inference`` does after the network.

    Args:
        class_logprobs: (N, T + 1), mask_logits: (N, Hp, Wp): the graph's outputs.
        image_size: (H, W) of the image before padding; output_size: (height, width) wanted
            (e.g. the original image's, before :func:`resize`).
        isthing: (T,) thing flag of each class.
        metadata: the file's (thresholds, detections per image, which outputs are on).
        threads: for the panoptic post-processing (:func:`panoptic_inference`; 0: one per CPU).
        switches: ``semantic_on`` / ``panoptic_on`` / ``instance_on`` overriding the file's.
    Returns:
        ``sem_seg`` (T, height, width) float32, ``panoptic_seg`` ((height, width) int32 ids,
        segments) and ``instances`` (:func:`instance_inference`), those switched on.
    """
    on = {k: switches.get(k, metadata[k]) for k in ("semantic_on", "panoptic_on", "instance_on")}
    isthing = np.asarray(isthing, bool)
    height, width = output_size
    out = {}
    if on["panoptic_on"] or on["instance_on"] or metadata["sem_seg_postprocess_before_inference"]:
        mask_logits = crop_and_resize(mask_logits, image_size, height, width)
        if on["semantic_on"]:
            out["sem_seg"] = semantic_inference(class_logprobs, mask_logits)
    elif on["semantic_on"]:
        out["sem_seg"] = crop_and_resize(semantic_inference(class_logprobs, mask_logits), image_size, height, width)
    if on["panoptic_on"]:
        out["panoptic_seg"] = panoptic_inference(
            class_logprobs, mask_logits, isthing, object_mask_threshold=metadata["object_mask_threshold"],
            overlap_threshold=metadata["overlap_threshold"], threads=threads)
    if on["instance_on"]:
        out["instances"] = instance_inference(class_logprobs, mask_logits, isthing,
                                              max_detections=metadata["detections_per_image"],
                                              things_only=on["panoptic_on"])
    return out
