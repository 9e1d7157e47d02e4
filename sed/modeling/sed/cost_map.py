"""Cost map between the dense CLIP embedding and the class text embeddings."""
import torch
import torch.nn.functional as F
from torch import nn


class CostMap(nn.Module):
    """Cosine cost volume of pixels x (class, template), embedded per class by a 7x7 conv
    over the template channels.
    """

    def __init__(self, *, num_templates: int, hidden_dim: int):
        super().__init__()
        self.embed = nn.Conv2d(num_templates, hidden_dim, kernel_size=7, padding=3)

    @staticmethod
    def cost_volume(image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """
        Args:
            image_embedding: (B, C, h, w) dense CLIP embedding.
            text_embedding: (T, P, C) class embeddings per template.
        Returns:
            (B, T, P, h, w) cosine similarities (no temperature), in the image embedding's type.
        """
        image_embedding = F.normalize(image_embedding, dim=1)
        # The cached text embeddings are float32; a model cast to half precision computes in its own type.
        text_embedding = F.normalize(text_embedding, dim=-1).to(image_embedding.dtype)
        return torch.einsum("bchw,tpc->btphw", image_embedding, text_embedding)

    def forward(self, cost: torch.Tensor) -> torch.Tensor:
        """
        Args:
            cost: (B, T, P, h, w) cost volume.
        Returns:
            (B*T, hidden, h, w) cost embedding, one map per image and class.
        """
        return self.embed(cost.flatten(0, 1))
