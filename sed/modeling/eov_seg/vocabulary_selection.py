"""Vocabulary-Aware Selection (``light_weight_decoder.vas``): weights each pixel of the neck
by how strongly it responds to some name of the vocabulary (or void)."""
import torch
from detectron2.layers import DepthwiseSeparableConv2d, NaiveSyncBatchNorm
from torch import nn


class VocabularyAwareSelection(nn.Module):
    """One-head attention of pixels over the text classifier; the best response per pixel,
    scaled and shifted, multiplies the neck."""

    def __init__(self, *, hidden_dim: int, embed_dim: int):
        """
        Args:
            hidden_dim: C, the neck's width.
            embed_dim: D, the text embeddings' width.
        """
        super().__init__()
        self.embed_conv = DepthwiseSeparableConv2d(
            hidden_dim, embed_dim, kernel_size=3, padding=1,
            norm1=NaiveSyncBatchNorm, activation1=nn.GELU(), norm2=NaiveSyncBatchNorm, activation2=nn.GELU(),
        )
        self.guide_fc = nn.Linear(embed_dim, embed_dim)
        self.scale = nn.Parameter(torch.ones(1, 1, 1, 1))
        self.offset = nn.Parameter(torch.zeros(1, 1, 1, 1))

    def forward(self, neck: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
        """
        Args:
            neck: (B, C, h, w).
            classifier: (S + 1, D) name embeddings and the void embedding.
        Returns:
            (B, C, h, w) the selected features F.
        """
        pixels = self.embed_conv(neck)  # (B, D, h, w)
        guide = self.guide_fc(classifier)
        attention = torch.einsum("bdhw,sd->bhws", pixels, guide) / guide.shape[-1] ** 0.5
        best = attention.softmax(dim=-1).amax(dim=-1).unsqueeze(1)  # (B, 1, h, w)
        return neck * (best * self.scale + self.offset)
