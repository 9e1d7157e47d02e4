"""Mask pooling and per-pixel products, used by the decoder stages and by the CLIP branch.

Written as matrix products over the flattened pixels rather than ``einsum``: the same kernels
in PyTorch, and plain ``MatMul`` nodes in an exported graph (onnxruntime's ``Einsum`` is
several times slower on the CPU).
"""
import torch


def binary_masks(mask_logits: torch.Tensor) -> torch.Tensor:
    """(..., h, w) mask logits -> float masks, 1 where the logit is above 0."""
    return (mask_logits > 0).to(mask_logits.dtype)


def mask_sum(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Sum of ``features`` (B, C, h, w) over each of ``masks`` (B, N, h, w) -> (B, N, C)."""
    return masks.flatten(2) @ features.flatten(2).transpose(1, 2)


def pixel_products(kernels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Each kernel's dot product with every pixel: ``kernels`` (B, N, C), ``features``
    (B, C, h, w) -> (B, N, h, w)."""
    return (kernels @ features.flatten(2)).unflatten(-1, features.shape[-2:])


def mask_average(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average of ``features`` (B, C, h, w) over each binary mask (B, N, h, w) -> (B, N, C);
    an empty mask gives 0."""
    return mask_sum(features, masks) / (masks.sum(dim=(-2, -1))[..., None] + 1e-8)
