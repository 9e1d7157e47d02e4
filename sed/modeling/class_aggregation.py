"""Class aggregation: a pre-norm transformer layer across classes at each (pooled) pixel,
with linear attention (feature map elu + 1).
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

TOKENS_PER_CHUNK = 1 << 24  # elements of the (pixels, T, C) token tensor handled at once


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Linear attention over the S keys ("Transformers are RNNs").

    Args:
        q: (N, L, H, D) queries; k, v: (N, S, H, D) keys and values.
    Returns:
        (N, L, H, D). Values are divided by S before the sums and the result multiplied by S
        afterwards (numerically safer in half precision; the released weights use this order).
    """
    q, k = F.elu(q) + 1, F.elu(k) + 1
    num_keys = v.shape[1]
    kv = torch.einsum("nshd,nshe->nhde", k, v / num_keys)
    normaliser = 1.0 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhde,nlh->nlhe", q, kv, normaliser) * num_keys


class LinearAttention(nn.Module):
    """Multi-head linear self-attention with separate q, k, v projections."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, C) -> (N, T, C)."""
        n, t, c = x.shape
        q, k, v = (proj(x).view(n, t, self.num_heads, -1) for proj in (self.q, self.k, self.v))
        return linear_attention(q, k, v).reshape(n, t, c)


class ClassAggregation(nn.Module):
    """Attention across the T classes of each image, at every pixel of a pooled map.

    The output is ``x + upsample(y)`` where ``y`` is the transformer layer's output on the
    pooled map (``y`` already contains the pooled ``x``): the released weights expect it.
    """

    def __init__(self, *, dim: int, num_heads: int, pooling_size: Sequence[int]):
        super().__init__()
        self.pooling_size = tuple(pooling_size)
        self.attention = LinearAttention(dim, num_heads)
        self.MLP = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def transformer_layer(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pre-norm attention + MLP across classes: (N pixels, T, C) -> (N, T, C)."""
        tokens = tokens + self.attention(self.norm1(tokens))
        return tokens + self.MLP(self.norm2(tokens))

    def forward(self, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """
        Args:
            x: (B*T, C, h, w) class maps, image-major.
            num_classes: T.
        Returns:
            (B*T, C, h, w).
        """
        bt, c, h, w = x.shape
        pooled = F.avg_pool2d(x, self.pooling_size) if self.pooling_size != (1, 1) else x
        ph, pw = pooled.shape[-2:]
        # (B, T, C, ph, pw) -> (B*ph*pw, T, C): one sequence of classes per pooled pixel.
        tokens = pooled.view(-1, num_classes, c, ph * pw).permute(0, 3, 1, 2).reshape(-1, num_classes, c)
        # Pixels are independent: a bounded number of them at a time keeps memory in check
        # for large vocabularies.
        rows = max(1, TOKENS_PER_CHUNK // (num_classes * c))
        tokens = torch.cat([self.transformer_layer(part) for part in tokens.split(rows)])
        y = tokens.view(-1, ph, pw, num_classes, c).permute(0, 3, 4, 1, 2).reshape(bt, c, ph, pw)
        if (ph, pw) != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=True)
        return x + y
