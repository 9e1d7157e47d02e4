"""The frozen ViT CLIP's first transformer block, for spatial detail.

Only the patch embedding, the positional embedding, ``ln_pre`` and block 0 of the image
tower are used: this module holds just those, under their open_clip names
(``vit_backbone.clip_model.visual.{conv1, class_embedding, positional_embedding, ln_pre,
transformer.resblocks.0}``). Everything else of a released checkpoint's ViT CLIP (later
blocks, ``ln_post``, ``proj``, the text tower) is dropped on load (see ``KEPT_PREFIXES``).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

# The parts of the open_clip ViT that the computation uses.
KEPT_PREFIXES: Tuple[str, ...] = (
    "visual.conv1.", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.",
    "visual.transformer.resblocks.0.",
)


def residual_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock`` on batch-first tokens (B, L, C) -> (B, L, C), its
    self-attention through ``scaled_dot_product_attention`` (a fused kernel on CPU too)."""
    attn = block.attn
    b, length, c = x.shape
    y = block.ln_1(x)
    q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).view(b, length, 3, attn.num_heads, -1).unbind(2)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    x = x + block.ls_1(attn.out_proj(y.transpose(1, 2).reshape(b, length, c)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class ViTFirstBlock(nn.Module):
    """Patch tokens of a ViT CLIP after its first block, frozen and in eval mode."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        visual = clip_model.visual
        kept = nn.Module()
        kept.conv1 = visual.conv1
        kept.class_embedding = visual.class_embedding
        kept.positional_embedding = visual.positional_embedding
        kept.ln_pre = visual.ln_pre
        kept.transformer = nn.Module()
        kept.transformer.resblocks = nn.ModuleList([visual.transformer.resblocks[0]])
        self.clip_model = nn.Module()
        self.clip_model.visual = kept
        self.clip_model.requires_grad_(False)
        self.patch_size = visual.conv1.stride[0]
        self.width = visual.conv1.out_channels
        self.grid = visual.grid_size
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images: (B, 3, Hp, Wp) normalised, padded images.
        Returns:
            (B, Cv, Hp/16, Wp/16) patch tokens after block 0 (class token dropped).
        """
        v = self.clip_model.visual
        x = v.conv1(images)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, L, Cv)
        x = torch.cat([v.class_embedding.to(x.dtype).expand(b, 1, c), x], dim=1)
        pos = v.positional_embedding.to(x.dtype)
        grid = pos[1:].reshape(1, *self.grid, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        x = x + torch.cat([pos[:1], grid.flatten(2)[0].t()])
        x = residual_block(v.transformer.resblocks[0], v.ln_pre(x))
        return x[:, 1:].transpose(1, 2).reshape(b, c, h, w)
