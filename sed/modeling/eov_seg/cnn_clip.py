"""The frozen CNN CLIP: multi-scale features, and CLIP's own embedding of mask regions.

The image tower gives ``stem``, ``res2..res5`` (strides 4..32) and ``clip_vis_dense`` for the
neck and the out-of-vocabulary branch; its text tower encodes the class prompts. The layout
follows the built model's type (open_clip ``ModifiedResNet`` or a timm ConvNeXt trunk), not
its name. The whole open_clip model is held as ``clip_model`` (released names
``cnn_backbone.clip_model.*``), frozen and always in eval mode.
"""
import copy
import math
from typing import Dict, Tuple, Type

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import Bottleneck, ModifiedResNet
from open_clip.timm_model import TimmModel
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ...clip.convnext import run_stage
from ...fused import capturing_graph
from .pooling import binary_masks, mask_average


class CNNCLIP(nn.Module):
    """Base of the CNN CLIP wrappers: frozen, in eval mode even while the model trains."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.clip_model = clip_model
        self.clip_model.requires_grad_(False)
        self.feature_channels: Dict[str, int] = {}
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip_model.logit_scale

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            images: (B, 3, Hp, Wp) normalised, padded images.
        Returns:
            ``stem``, ``res2``..``res5`` (B, C_i, Hp/2^i, Wp/2^i) and ``clip_vis_dense``
            (B, C5, Hp/32, Wp/32).
        """
        raise NotImplementedError

    def embed_masks(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings of mask regions.

        Args:
            dense: (B, C5, h, w) ``clip_vis_dense``.
            masks: (B, N, h, w) mask logits at the size of ``dense``.
        Returns:
            (B, N, D) embeddings (not normalised).
        """
        raise NotImplementedError


class ConvNeXtCLIP(CNNCLIP):
    """open_clip ``TimmModel`` with a ConvNeXt trunk (e.g. ``convnext_large_d_320``); its stages
    run with fused CPU kernels at inference (:func:`sed.clip.convnext.run_stage`)."""

    def __init__(self, clip_model: nn.Module):
        super().__init__(clip_model)
        trunk = clip_model.visual.trunk
        self.feature_channels = {f"res{i + 2}": info["num_chs"] for i, info in enumerate(trunk.feature_info)}

    def forward(self, images):
        trunk = self.clip_model.visual.trunk
        x = trunk.stem(images)
        features = {"stem": x}
        for i, stage in enumerate(trunk.stages):
            x = run_stage(stage, x)
            features[f"res{i + 2}"] = x
        features["clip_vis_dense"] = trunk.norm_pre(x)
        return features

    def embed_masks(self, dense, masks):
        pooled = mask_average(dense, binary_masks(masks))  # (B, N, C5)
        # The trunk's head norm on each pooled vector as a 1x1 map, then CLIP's projection head.
        pooled = self.clip_model.visual.trunk.head.norm(pooled.transpose(1, 2).unsqueeze(-1))
        return self.clip_model.visual.head(pooled.squeeze(-1).transpose(1, 2))


# The parts of an open_clip ``ModifiedResNet`` that ``ResNetCLIP.forward`` runs.
RESNET_TRUNK: Tuple[str, ...] = ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3", "avgpool",
                                 "layer1", "layer2", "layer3", "layer4")


def fold_resnet_batchnorms(visual: ModifiedResNet) -> nn.Module:
    """A copy of the trunk of ``visual`` (:data:`RESNET_TRUNK`, no attention pool) with every
    BatchNorm folded into the convolution before it, as evaluation-mode BatchNorm computes:
    ``convK``/``bnK`` of the stem and of each ``Bottleneck``, and each down-sampling branch's
    convolution and BatchNorm. The BatchNorms become identities, so the copy runs the same
    forward code with one pass over each activation fewer."""
    trunk = nn.Module()
    for name in RESNET_TRUNK:
        setattr(trunk, name, copy.deepcopy(getattr(visual, name)))
    for module in [trunk, *(m for m in trunk.modules() if isinstance(m, Bottleneck))]:
        for k in (1, 2, 3):
            setattr(module, f"conv{k}", fuse_conv_bn_eval(getattr(module, f"conv{k}"), getattr(module, f"bn{k}")))
            setattr(module, f"bn{k}", nn.Identity())
        if getattr(module, "downsample", None) is not None:
            branch = module.downsample
            branch[1] = fuse_conv_bn_eval(branch[1], branch[2])
            branch[2] = nn.Identity()
    return trunk.requires_grad_(False)


class ResNetCLIP(CNNCLIP):
    """open_clip ``ModifiedResNet`` (the OpenAI ``RN50``, ``RN50x4``, ...).

    Without gradients (inference) the trunk runs from a copy with its BatchNorms folded into
    the convolutions (:func:`fold_resnet_batchnorms`), made at the first such call and again
    whenever a weight of the image tower changed (a checkpoint load, a move to another
    device); with gradients (training, where the tower is frozen too) it runs the released
    modules, so training computes exactly what it did without the copy. Exported and compiled
    graphs trace the released modules too (the copy is made from the weights' storage, which a
    traced tensor does not have; inductor folds the BatchNorms itself).
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__(clip_model)
        visual = clip_model.visual
        layers = (visual.layer1, visual.layer2, visual.layer3, visual.layer4)
        self.feature_channels = {f"res{i + 2}": layer[-1].bn3.num_features for i, layer in enumerate(layers)}
        # (weights' storage and versions, folded trunk); not a submodule: no checkpoint keys.
        self.__dict__["_folded"] = (None, None)

    def folded_trunk(self) -> nn.Module:
        """The trunk with folded BatchNorms, up to date with the current weights."""
        visual = self.clip_model.visual
        trunk = [getattr(visual, name) for name in RESNET_TRUNK]
        key = tuple((t.data_ptr(), t._version) for m in trunk for t in (*m.parameters(), *m.buffers()))
        if self._folded[0] != key:
            self.__dict__["_folded"] = (None, None)  # free the old copy before making the new one
            self.__dict__["_folded"] = (key, fold_resnet_batchnorms(visual))
        return self._folded[1]

    def clear_inference_cache(self) -> None:
        """Drop the folded copy: the next inference pass folds again from the weights (so that
        ``tools/benchmark.py`` sees that pass read them)."""
        self.__dict__["_folded"] = (None, None)

    def forward(self, images):
        folded = not torch.is_grad_enabled() and not capturing_graph()
        v = self.folded_trunk() if folded else self.clip_model.visual
        x = v.act1(v.bn1(v.conv1(images)))
        x = v.act2(v.bn2(v.conv2(x)))
        x = v.act3(v.bn3(v.conv3(x)))
        features = {"stem": x}
        x = v.avgpool(x)
        for i, layer in enumerate((v.layer1, v.layer2, v.layer3, v.layer4)):
            x = layer(x)
            features[f"res{i + 2}"] = x
        features["clip_vis_dense"] = x
        return features

    def embed_masks(self, dense, masks):
        """CLIP's attention pool with one query per proposal, attending only to its mask's
        pixels. Keys and values: the pixels plus the spatial positional embedding (resized to
        the map); query: the mean pixel plus the class positional embedding. A proposal whose
        mask is empty gets zeros (it never reaches the output: ``ENSEMBLE_ON_VALID_MASK``)."""
        pool = self.clip_model.visual.attnpool
        b, c, h, w = dense.shape
        n = masks.shape[1]
        pos = pool.positional_embedding.to(dense.dtype)
        grid = math.isqrt(int(pos.shape[0]) - 1)  # 1 + grid**2 positions
        spatial = pos[1:].reshape(1, grid, grid, c).permute(0, 3, 1, 2)
        spatial = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=False)
        pixels = dense.flatten(2).transpose(1, 2)  # (B, hw, C)
        keys = pixels + spatial.flatten(2).transpose(1, 2)
        query = (pixels.mean(dim=1, keepdim=True) + pos[:1]).expand(b, n, c)
        heads = pool.num_heads

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, heads, L, C / heads)
            return x.unflatten(-1, (heads, c // heads)).transpose(1, 2)

        allowed = binary_masks(masks).flatten(2).bool()  # (B, N, hw)
        empty = ~allowed.any(dim=-1, keepdim=True)
        # An empty mask's query attends to every pixel (no row of -inf: NaN on some backends),
        # then gets zeros.
        out = F.scaled_dot_product_attention(
            split(pool.q_proj(query)), split(pool.k_proj(keys)), split(pool.v_proj(keys)),
            attn_mask=(allowed | empty).unsqueeze(1),
        )
        out = pool.c_proj(out.transpose(1, 2).flatten(2))
        return out.masked_fill(empty, 0.0)


# open_clip image-tower type -> wrapper.
CNN_CLIP_TYPES: Dict[type, Type[CNNCLIP]] = {ModifiedResNet: ResNetCLIP, TimmModel: ConvNeXtCLIP}


def build_cnn_clip(clip_model: nn.Module) -> CNNCLIP:
    """Wrap an open_clip model by the type of its image tower."""
    kind = type(clip_model.visual)
    if kind not in CNN_CLIP_TYPES:
        raise ValueError(f"EOV-Seg needs a CNN CLIP (ResNet or ConvNeXt image tower); got {kind.__name__}")
    return CNN_CLIP_TYPES[kind](clip_model)
