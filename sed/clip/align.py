"""Aligning a random image tower's dense embedding with the class prompt embeddings: the
embedded default's stand-in for CLIP's image-text pretraining.

SED tells classes apart only through its cost volume, the cosine between each pixel's CLIP
embedding and each class's prompt embeddings. Pretrained CLIP gives a cost volume in which a
class's pixels are already closer to its name than the other pixels are. A random image tower
does not: its embedding is about as close to a class's name off the class as on it, and the
(shared) decoder must discover each class from that noise. It discovers them one at a time,
in an order set by the floating-point order of the run, and a class not discovered by the
end is never predicted. Training the image tower alone for a few hundred steps, so that each
pixel's embedding is closest to its own class's name (class-balanced cross-entropy over the
classes' cosines, at CLIP's logit scale), gives the cost volume every class's evidence from
the first step of SED's training, as pretrained CLIP does.
"""
from typing import Callable, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DenseEncoder = Callable[[torch.Tensor], torch.Tensor]


def class_logits(encode: DenseEncoder, images: torch.Tensor, text: torch.Tensor, size: Sequence[int],
                 logit_scale: float) -> torch.Tensor:
    """Scaled cosines between every pixel's embedding and every class, up-sampled (bilinear)
    to ``size``.

    Args:
        encode: (B, 3, S, S) images -> (B, C, h, w) dense embeddings.
        images: (B, 3, S, S), as ``encode`` takes them.
        text: (T, C) class embeddings, normalised.
    Returns:
        (B, T, H, W) logits.
    """
    dense = F.normalize(encode(images), dim=1)
    logits = torch.einsum("bchw,tc->bthw", dense, text.to(dense.dtype)) * logit_scale
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(T,) weights inversely proportional to each class's pixel count in ``labels``, mean 1
    over the classes present (0 for absent ones): every class weighs the same in the loss."""
    counts = torch.bincount(labels[labels < num_classes].flatten(), minlength=num_classes).float()
    weights = torch.where(counts > 0, counts.sum() / counts.clamp_min(1), torch.zeros_like(counts))
    return weights / weights[counts > 0].mean()


def align_image_tower(encode: DenseEncoder, parameters: Sequence[nn.Parameter], images: torch.Tensor,
                      labels: torch.Tensor, text: torch.Tensor, *, steps: int, lr: float, batch_size: int,
                      logit_scale: float, ignore_value: int, generator: torch.Generator) -> List[float]:
    """Train ``parameters`` (the image tower's) in place so that each pixel's dense embedding
    is closest to its class's text embedding.

    Args:
        images: (N, 3, S, S) training images, as ``encode`` takes them.
        labels: (N, H, W) class ids, ``ignore_value`` where unlabelled.
        text: (T, C) class embeddings, normalised.
        generator: draws the batches (``batch_size`` images each).
    Returns:
        the loss of each step.
    """
    weights = class_weights(labels, text.shape[0])
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            batch = torch.randint(len(images), (batch_size,), generator=generator)
            logits = class_logits(encode, images[batch], text, labels.shape[-2:], logit_scale)
            loss = F.cross_entropy(logits, labels[batch], weight=weights, ignore_index=ignore_value)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


@torch.no_grad()
def class_accuracy(encode: DenseEncoder, images: torch.Tensor, labels: torch.Tensor, text: torch.Tensor,
                   batch_size: int) -> torch.Tensor:
    """(T,) share of each class's pixels whose nearest class embedding is their own (the
    zero-shot segmentation of the dense embedding); NaN for a class with no pixel."""
    num_classes = text.shape[0]
    hits = torch.zeros(num_classes)
    totals = torch.zeros(num_classes)
    for start in range(0, len(images), batch_size):
        target = labels[start:start + batch_size]
        predicted = class_logits(encode, images[start:start + batch_size], text, target.shape[-2:], 1.0).argmax(1)
        valid = target < num_classes
        totals += torch.bincount(target[valid], minlength=num_classes).float()
        hits += torch.bincount(target[valid & (predicted == target)], minlength=num_classes).float()
    return hits / totals
