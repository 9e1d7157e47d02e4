"""One stage of the gradual fusion decoder: spatial aggregation (a large-kernel ConvNeXt
block), class aggregation, then 2x up-sampling fused with encoder and cost-map guidance.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .chunks import chunk_sizes, map_chunks
from .class_aggregation import ClassAggregation


class ConvNeXtBlock(nn.Module):
    """Depthwise k x k conv, LayerNorm, Linear(C, 4C), GELU, Linear(4C, C), layer scale,
    residual. Input and output (N, C, h, w).
    """

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return torch.addcmul(x, self.gamma.view(-1, 1, 1), y.permute(0, 3, 1, 2))


class DecoderStage(nn.Module):
    """(B*T, in_dim, h, w) class maps -> (B*T, out_dim, 2h, 2w), in two steps: ``aggregate``
    (needs all classes of an image) and ``upsample_fuse`` (any subset of maps)."""

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        guidance_dim: int,
        kernel_size: int,
        num_heads: int,
        pooling_size: Sequence[int],
    ):
        super().__init__()
        self.guidance_dim = guidance_dim
        self.spatial = ConvNeXtBlock(in_dim, kernel_size)
        self.classes = ClassAggregation(dim=in_dim, num_heads=num_heads, pooling_size=pooling_size)
        self.up = nn.ConvTranspose2d(in_dim, in_dim - guidance_dim, kernel_size=2, stride=2)
        self.fuse = nn.Sequential(
            nn.Conv2d(in_dim + guidance_dim, out_dim, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(out_dim // 16, out_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(out_dim // 16, out_dim),
            nn.ReLU(inplace=True),
        )

    def aggregate(self, x: torch.Tensor, num_classes: int, chunk_size: int) -> torch.Tensor:
        """Spatial aggregation of each class map (``chunk_size`` maps at a time), then class
        aggregation across the T classes of each image. (B*T, in_dim, h, w) -> same shape."""
        y = map_chunks(self.spatial, [x], chunk_sizes(x.shape[0], chunk_size))
        return self.classes(y, num_classes)

    def encoder_term(self, encoder_guidance: torch.Tensor) -> torch.Tensor:
        """The fusion's first convolution restricted to the encoder-guidance channels: shared
        by all classes of an image, so computed once per image.

        Args:
            encoder_guidance: (B, g, 2h, 2w).
        Returns:
            (B, out_dim, 2h, 2w).
        """
        up_dim = self.up.out_channels
        return F.conv2d(encoder_guidance, self.fuse[0].weight[:, up_dim : up_dim + self.guidance_dim], padding=1)

    def upsample_fuse(self, x: torch.Tensor, encoder_term: torch.Tensor, cost_guidance: torch.Tensor) -> torch.Tensor:
        """Up-sample class maps and fuse them with their guidance.

        The first fusion convolution acts on the concatenation [up(x), encoder guidance, cost
        guidance]; it is computed as the sum of its parts, with the encoder part given.

        Args:
            x: (N, in_dim, h, w) class maps of one image.
            encoder_term: (1, out_dim, 2h, 2w) from ``encoder_term``.
            cost_guidance: (N, g, 2h, 2w).
        Returns:
            (N, out_dim, 2h, 2w).
        """
        weight, up_dim = self.fuse[0].weight, self.up.out_channels
        y = F.conv2d(self.up(x), weight[:, :up_dim], padding=1)
        y += F.conv2d(cost_guidance, weight[:, up_dim + self.guidance_dim :], padding=1)
        return self.fuse[1:](y.add_(encoder_term))
