"""The stages of a timm ConvNeXt trunk (open_clip's ConvNeXt CLIP towers), with fused CPU
kernels at inference.

Where :func:`sed.fused.fused_kernels_apply`, each block's MLP runs as two oneDNN matrix
products, the first with its GELU in the epilogue (:func:`sed.fused.linear`), and layer scale
plus residual as one pass (``torch.addcmul``): timm's ``ConvNeXtBlock.forward`` without the
bias copies and the separate GELU and scale passes over the (H, W, 4C) hidden activations,
memory-bound passes that take a large share of a ConvNeXt trunk's CPU time. Elsewhere, and for
a block of another layout, the stage's own forward runs.
"""
import torch
from timm.models.convnext import ConvNeXtBlock, ConvNeXtStage
from torch import nn

from ..fused import fused_kernels_apply, gelu_algorithm, linear


def block_is_fusable(block: nn.Module) -> bool:
    """A ``ConvNeXtBlock`` computing ``x + gamma * fc2(gelu(fc1(norm(conv_dw(x)))))`` with
    channels-last linear layers and no norm, shortcut projection or drop-out in between
    (dropout and drop-path are identities at inference)."""
    if type(block) is not ConvNeXtBlock or block.use_conv_mlp:
        return False
    mlp = block.mlp
    return (gelu_algorithm(mlp.act) is not None and isinstance(block.shortcut, nn.Identity)
            and isinstance(mlp.norm, nn.Identity) and isinstance(mlp.fc1, nn.Linear)
            and isinstance(mlp.fc2, nn.Linear))


def fused_block(block: ConvNeXtBlock, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` for a :func:`block_is_fusable` block, with fused kernels.

    Args:
        x: (B, C, H, W), fastest channels-last (then no layout copies are made).
    Returns:
        (B, C, H, W), channels-last.
    """
    fc1, fc2 = block.mlp.fc1, block.mlp.fc2
    y = block.norm(block.conv_dw(x).permute(0, 2, 3, 1))  # (B, H, W, C)
    y = linear(y, fc1.weight, fc1.bias, gelu=gelu_algorithm(block.mlp.act))  # (B, H, W, 4C)
    y = linear(y, fc2.weight, fc2.bias)  # (B, H, W, C)
    shortcut = x.permute(0, 2, 3, 1)
    y = shortcut + y if block.gamma is None else torch.addcmul(shortcut, y, block.gamma)
    return y.permute(0, 3, 1, 2)


def run_stage(stage: ConvNeXtStage, x: torch.Tensor) -> torch.Tensor:
    """``stage(x)``: (B, C_in, H, W) -> (B, C, H / s, W / s), with :func:`fused_block` for its
    fusable blocks where the fused kernels apply."""
    if not fused_kernels_apply(x):
        return stage(x)
    x = stage.downsample(x)
    for block in stage.blocks:
        x = fused_block(block, x) if block_is_fusable(block) else block(x)
    return x
