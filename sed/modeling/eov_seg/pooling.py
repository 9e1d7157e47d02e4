"""Mask pooling, used by the decoder stages and by the CLIP branch."""
import torch


def binary_masks(mask_logits: torch.Tensor) -> torch.Tensor:
    """(..., h, w) mask logits -> float masks, 1 where the logit is above 0."""
    return (mask_logits > 0).to(mask_logits.dtype)


def mask_sum(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Sum of ``features`` (B, C, h, w) over each of ``masks`` (B, N, h, w) -> (B, N, C)."""
    return torch.einsum("bnhw,bchw->bnc", masks, features)


def mask_average(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average of ``features`` (B, C, h, w) over each binary mask (B, N, h, w) -> (B, N, C);
    an empty mask gives 0."""
    return mask_sum(features, masks) / (masks.sum(dim=(-2, -1))[..., None] + 1e-8)
