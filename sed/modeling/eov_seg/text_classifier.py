"""Open-vocabulary classification against text embeddings, with synonyms and a void class.

A vocabulary of T classes with S names in all gives S name embeddings; a learned void
embedding is appended as row S. An embedding's logit for a class is the scaled cosine
similarity with the best of its names; the void logit comes last -> (..., T + 1).
"""
from typing import Sequence

import torch
import torch.nn.functional as F


def names_index(num_names: Sequence[int]) -> torch.Tensor:
    """(T, K) int64 rows of each class's names among all S = sum(num_names) names, class by
    class, K the most names of a class; shorter lists repeat their first name."""
    starts = torch.tensor([0, *num_names[:-1]]).cumsum(0)
    width = max(num_names)
    offsets = torch.arange(width).expand(len(num_names), width)
    offsets = torch.where(offsets < torch.tensor(num_names)[:, None], offsets, 0)
    return starts[:, None] + offsets


class TextClassifier:
    """The (S + 1, D) classifier of one vocabulary and the names of each class."""

    def __init__(self, name_embeddings: torch.Tensor, void_embedding: torch.Tensor, name_index: torch.Tensor):
        """
        Args:
            name_embeddings: (S, D) L2-normalised embeddings, class by class.
            void_embedding: (1, D) learned void embedding (normalised here).
            name_index: (T, K) int64 rows of each class's names in ``name_embeddings``
                (:func:`names_index`).
        """
        self.weight = torch.cat([name_embeddings, F.normalize(void_embedding, dim=-1)])
        self.name_index = name_index.to(name_embeddings.device)

    @property
    def num_classes(self) -> int:
        return self.name_index.shape[0]

    def logits(self, embeddings: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        """
        Args:
            embeddings: (..., D) embeddings (normalised here).
            logit_scale: scalar s; the temperature is min(exp(s), 100).
        Returns:
            (..., T + 1) float32 logits, void last. They are computed in float32 also under
            autocast: scaled by up to 100, cosines rounded to bfloat16 would tie or swap
            classes.
        """
        with torch.autocast(embeddings.device.type, enabled=False):
            x = F.normalize(embeddings.float(), dim=-1) @ self.weight.t().float()
        x = logit_scale.exp().clamp(max=100) * x
        per_class = x[..., self.name_index.flatten()].unflatten(-1, self.name_index.shape).amax(dim=-1)
        return torch.cat([per_class, x[..., -1:]], dim=-1)
