"""Category early rejection: keep only the classes that rank in the top K somewhere."""
import torch

from .chunks import size_min


def select_top_classes(scores: torch.Tensor, topk: int) -> torch.Tensor:
    """Classes that are among the ``topk`` highest scores of at least one pixel.

    Args:
        scores: (T, h, w) per-class scores of one image.
    Returns:
        (T',) sorted indices of the kept classes, T' <= T.
    """
    top = scores.topk(size_min(topk, scores.shape[0]), dim=0).indices
    return torch.unique(top)
