"""Class aggregation: a pre-norm transformer layer across classes at each (pooled) pixel,
with linear attention (feature map elu + 1).
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .chunks import chunk_sizes, map_chunks, size_max

# Elements of the (pixels, T, C) token tensor handled at once, by device type: on CPU a group's
# activations stay in cache; on GPU fewer, larger kernels, with memory still bounded.
TOKENS_PER_CHUNK = {"cpu": 1 << 17, "cuda": 1 << 24}


class LinearAttention(nn.Module):
    """Multi-head linear self-attention ("Transformers are RNNs") with separate q, k, v
    projections and feature map elu(x) + 1.

    The heads are computed together, as (C, C) matrices masked to their (D, D) diagonal
    blocks, so that every product is a plain batched matrix multiply on the (N, T, C) layout.
    """

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        head_dim = dim // num_heads
        self.register_buffer("head_mask", torch.block_diag(*[torch.ones(head_dim, head_dim)] * num_heads), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, C) -> (N, T, C), attending over the T tokens of each of the N sequences.

        Values are divided by T before the sums and the result multiplied by T afterwards
        (numerically safer in half precision; the released weights use this order).
        """
        num_keys, dim = x.shape[1], x.shape[2]
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        q, k, v = F.linear(x, weight, bias).split(dim, dim=-1)
        q, k = F.elu(q) + 1, F.elu(k) + 1
        mask = self.head_mask.to(q.dtype)
        kv = torch.bmm(k.transpose(1, 2), v / num_keys) * mask  # (N, C, C), per head (D, D)
        normaliser = torch.matmul(q * k.sum(dim=1, keepdim=True), mask) + self.eps  # (N, T, C)
        return torch.bmm(q, kv) / normaliser * num_keys


class ClassAggregation(nn.Module):
    """Attention across the T classes of each image, at every pixel of a pooled map.

    The output is ``x + upsample(y)`` where ``y`` is the transformer layer's output on the
    pooled map (``y`` already contains the pooled ``x``): the released weights expect it.
    """

    def __init__(self, *, dim: int, num_heads: int, pooling_size: Sequence[int]):
        super().__init__()
        self.pooling_size = tuple(pooling_size)
        self.attention = LinearAttention(dim, num_heads)
        self.MLP = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(inplace=True), nn.Linear(4 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def transformer_layer(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pre-norm attention + MLP across classes: (N pixels, T, C) -> (N, T, C)."""
        tokens = tokens + self.attention(self.norm1(tokens))
        return tokens + self.MLP(self.norm2(tokens))

    def attend_pixels(self, maps: torch.Tensor) -> torch.Tensor:
        """The transformer layer at a group of pixels: (B, T, N, C) -> (B, T, N, C)."""
        batch, num_classes, pixels, dim = maps.shape
        tokens = maps.transpose(1, 2).reshape(batch * pixels, num_classes, dim)
        return self.transformer_layer(tokens).view(batch, pixels, num_classes, dim).transpose(1, 2)

    def attend(self, x: torch.Tensor, num_classes: int, recompute: bool = False) -> torch.Tensor:
        """The transformer layer across classes at every pixel of the pooled maps.

        Args:
            x: (B*T, C, h, w) class maps, image-major.
            num_classes: T.
            recompute: recompute each group of pixels in the backward pass instead of keeping
                its activations (``map_chunks``).
        Returns:
            (B*T, C, h', w') channels-last, the layer's output on the maps pooled to h' x w'.
        """
        bt, c = x.shape[:2]
        pooled = F.avg_pool2d(x, self.pooling_size) if self.pooling_size != (1, 1) else x
        ph, pw = pooled.shape[-2:]
        # (B, T, ph*pw, C) view of the channels-last maps: a pixel's classes are tokens.
        pooled = pooled.contiguous(memory_format=torch.channels_last)
        maps = pooled.permute(0, 2, 3, 1).reshape(-1, num_classes, ph * pw, c)
        # Pixels are independent: they go through in small groups, which keeps the
        # activations in cache and memory bounded for large vocabularies.
        rows = size_max(1, TOKENS_PER_CHUNK.get(x.device.type, 1 << 24) // (maps.shape[0] * num_classes * c))
        y = map_chunks(self.attend_pixels, [maps], chunk_sizes(ph * pw, rows), dim=2, recompute=recompute,
                       modules=[self])
        return y.view(bt, ph, pw, c).permute(0, 3, 1, 2)

    @staticmethod
    def add_upsampled(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x`` plus ``y`` up-sampled to its size: (N, C, h, w), (N, C, h', w') -> (N, C, h, w).
        Any subset of maps, so per chunk of classes too."""
        if y.shape[-2:] != x.shape[-2:]:
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True).add_(x)
        return y + x

    def forward(self, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """
        Args:
            x: (B*T, C, h, w) class maps, image-major.
            num_classes: T.
        Returns:
            (B*T, C, h, w), channels-last.
        """
        return self.add_upsampled(x, self.attend(x, num_classes))
