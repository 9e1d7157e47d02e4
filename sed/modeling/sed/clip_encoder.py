"""The hierarchical encoder: a ConvNeXt CLIP model from open_clip.

The image tower (a timm ConvNeXt trunk) gives multi-scale features ``res2..res5`` and a
dense CLIP embedding ``clip_vis_dense``: the trunk's classifier norm and CLIP's image
projection applied at every pixel of ``res5`` instead of after global pooling. The text
tower of the same model encodes the class prompts (see ``sed.clip.text``).
"""
from typing import Dict

import torch
from torch import nn

from ...clip.convnext import run_stage


class CLIPImageEncoder(nn.Module):
    """Image side of the CLIP model: hierarchical features and the dense CLIP embedding.

    Holds the whole CLIP model as ``clip`` so that its parameter names stay open_clip's own;
    only the image tower is used here. Its stages run with fused CPU kernels at inference
    (:func:`sed.clip.convnext.run_stage`).
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.clip = clip_model
        trunk = clip_model.visual.trunk
        # Channels of res2..res5, from timm's description of the trunk's stages.
        self.feature_channels = {
            f"res{i + 2}": info["num_chs"] for i, info in enumerate(trunk.feature_info)
        }

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            images: (B, 3, S, S) CLIP-normalised images.
        Returns:
            ``res2``..``res5``: (B, C_i, S/4..S/32, ...) trunk features;
            ``clip_vis_dense``: (B, C, S/32, S/32) CLIP embedding at every pixel.
        """
        trunk = self.clip.visual.trunk
        x = trunk.stem(images)
        features = {}
        for i, stage in enumerate(trunk.stages):
            x = run_stage(stage, x)
            features[f"res{i + 2}"] = x
        x = trunk.head.norm(trunk.norm_pre(x))
        x = self.clip.visual.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        features["clip_vis_dense"] = x
        return features
