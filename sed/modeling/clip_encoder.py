"""The hierarchical encoder: a ConvNeXt CLIP model from open_clip.

The image tower (a timm ConvNeXt trunk) gives multi-scale features ``res2..res5`` and a
dense CLIP embedding ``clip_vis_dense``: the trunk's classifier norm and CLIP's image
projection applied at every pixel of ``res5`` instead of after global pooling. The text
tower of the same model encodes the class prompts (see ``text_vocabulary``).
"""
import logging
import os
from typing import Dict

import open_clip
import torch
from torch import nn

logger = logging.getLogger(__name__)


def create_clip_model(model_name: str, pretrained: str) -> nn.Module:
    """Build an open_clip model in float32.

    Args:
        model_name: an open_clip model name, or the path of an open_clip model-config JSON
            (registered under its file stem).
        pretrained: an open_clip pretrained tag, a local weights file, or "" for random init.
    """
    name = resolve_model_name(model_name)
    if pretrained and not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(
                f"MODEL.ENC.CLIP_PRETRAINED_WEIGHTS={pretrained!r} is neither a file nor a "
                f"pretrained tag of {name!r} (tags: {tags}); use '' for random init."
            )
    logger.info("Building CLIP %s (weights: %s)", name, pretrained or "random init")
    return open_clip.create_model(name, pretrained=pretrained or None, precision="fp32")


def resolve_model_name(model_name: str) -> str:
    """Return the open_clip name of ``model_name``, registering it first if it is a JSON file."""
    if model_name.endswith(".json"):
        if not os.path.isfile(model_name):
            raise FileNotFoundError(f"open_clip model config {model_name!r} does not exist")
        open_clip.add_model_config(model_name)
        return os.path.splitext(os.path.basename(model_name))[0]
    if model_name not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip model {model_name!r} (MODEL.ENC.CLIP_MODEL_NAME)")
    return model_name


class CLIPImageEncoder(nn.Module):
    """Image side of the CLIP model: hierarchical features and the dense CLIP embedding.

    Holds the whole CLIP model as ``clip`` so that its parameter names stay open_clip's own;
    only the image tower is used here.
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
            x = stage(x)
            features[f"res{i + 2}"] = x
        x = trunk.head.norm(trunk.norm_pre(x))
        x = self.clip.visual.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        features["clip_vis_dense"] = x
        return features
