"""The lightweight decoder (``light_weight_decoder``): N learned proposal kernels refined in
a few stages into masks and class embeddings, with Vocabulary-Aware Selection on the neck and
the up-sampled ViT features as a second view of each proposal."""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers.batch_norm import LayerNorm as ChannelLayerNorm
from torch import nn

from .embedding_experts import DynamicEmbeddingExperts
from .pooling import binary_masks, mask_average, mask_sum, pixel_products
from .text_classifier import TextClassifier
from .vocabulary_selection import VocabularyAwareSelection

FFN_HIDDEN_DIM = 2048


class DynamicChannelConv(nn.Module):
    """A 1-D convolution along the channels of each proposal's vector, with a kernel of
    ``kernel_size`` taps predicted from that proposal's kernel, then LayerNorm."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight_linear = nn.Linear(dim, kernel_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """x (B, N, C) vectors, kernels (B, N, C) -> (B, N, C): per proposal, the
        cross-correlation of x with its own taps (zero padding, same length)."""
        taps = self.weight_linear(kernels)  # (B, N, K)
        pad = self.kernel_size // 2
        padded = F.pad(x, (pad, self.kernel_size - 1 - pad))
        c = x.shape[-1]
        out = sum(taps[..., j : j + 1] * padded[..., j : j + c] for j in range(self.kernel_size))
        return self.norm(out)


class FFN(nn.Module):
    """Linear -> ReLU -> Linear (``ffn.layers``)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU()), nn.Linear(hidden_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MLP(nn.Module):
    """Linear layers with ReLU between them (``class_embed.layers``)."""

    def __init__(self, dims: List[int]):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class DecoderStage(nn.Module):
    """One refinement of the proposals (``mask_heads.{i}``)."""

    def __init__(self, *, hidden_dim: int, vit_dim: int, embed_dim: int, kernel_size_1d: int,
                 num_mask_fcs: int, num_heads: int = 8):
        super().__init__()
        c = hidden_dim
        self.f_atten = DynamicChannelConv(c, kernel_size_1d)
        self.f_atten_norm = nn.LayerNorm(c)
        self.k_atten = DynamicChannelConv(c, kernel_size_1d)
        self.k_atten_norm = nn.LayerNorm(c)
        self.s_atten = nn.MultiheadAttention(c, num_heads, batch_first=True)
        self.s_atten_norm = nn.LayerNorm(c)
        self.ffn = FFN(c, FFN_HIDDEN_DIM)
        self.ffn_norm = nn.LayerNorm(c)
        self.mask_fcs = nn.Sequential(*[m for _ in range(num_mask_fcs)
                                        for m in (nn.Linear(c, c, bias=False), nn.LayerNorm(c), nn.ReLU())])
        self.fc_mask = nn.Linear(c, c)
        self._mask_pooling_proj = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, c))
        self._spatial_mask_pooling_proj = nn.Sequential(nn.LayerNorm(vit_dim), nn.Linear(vit_dim, c))
        self.tdee = DynamicEmbeddingExperts(c)
        self.class_embed = MLP([c, c, c, embed_dim])
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())
        for m in self.modules():  # the recipe's initialisation
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor, vit_features: torch.Tensor, kernels: torch.Tensor,
                masks: torch.Tensor, classifier: TextClassifier,
                classify: bool = True) -> Tuple[Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
        """
        Args:
            features: (B, C, h, w) F, the selected neck features.
            vit_features: (B, Cv, h, w) up-sampled ViT features.
            kernels: (B, N, C) proposal kernels; masks: (B, N, h, w) their mask logits.
            classify: False skips the class logits (mask pooling, embedding experts, class
                embedding), which the next stage does not read.
        Returns:
            class logits (B, N, T + 1) (None without ``classify``), new mask logits
            (B, N, h, w), new kernels (B, N, C).
        """
        hard = (masks.sigmoid() > 0.5).to(features.dtype)
        f = mask_sum(features, hard)
        f = self.f_atten_norm(f + self.f_atten(f, kernels))
        k = self.k_atten_norm(f + self.k_atten(f, kernels))
        k = self.s_atten_norm(k + self.s_atten(k, k, k, need_weights=False)[0])
        kernels = self.ffn_norm(k + self.ffn(k))

        masks = pixel_products(self.fc_mask(self.mask_fcs(kernels)), features)
        if not classify:
            return None, masks, kernels
        hard = binary_masks(masks)
        pooled = self._mask_pooling_proj(mask_average(features, hard))
        pooled_vit = self._spatial_mask_pooling_proj(mask_average(vit_features, hard))
        class_embeddings = self.class_embed(self.tdee(pooled, pooled_vit) + kernels)
        return classifier.logits(class_embeddings, self.logit_scale), masks, kernels


class LightweightDecoder(nn.Module):
    """Proposal kernels -> per-stage class logits and mask logits (``light_weight_decoder``)."""

    def __init__(self, *, hidden_dim: int, vit_dim: int, embed_dim: int, num_proposals: int,
                 num_stages: int, kernel_size_1d: int, num_mask_fcs: int, criterion: nn.Module):
        """
        Args:
            hidden_dim: C; vit_dim: Cv; embed_dim: D (text embeddings).
            num_proposals: N; num_stages: refinements, each with its own outputs.
            criterion: the training loss (held here for its released name ``criterion``).
        """
        super().__init__()
        self.object_kernels = nn.Embedding(num_proposals, hidden_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, vit_dim, kernel_size=2, stride=2),
            ChannelLayerNorm(vit_dim, eps=1e-6),
            nn.GELU(),
            nn.ConvTranspose2d(vit_dim, vit_dim, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.vas = VocabularyAwareSelection(hidden_dim=hidden_dim, embed_dim=embed_dim)
        self.mask_heads = nn.ModuleList(
            DecoderStage(hidden_dim=hidden_dim, vit_dim=vit_dim, embed_dim=embed_dim,
                         kernel_size_1d=kernel_size_1d, num_mask_fcs=num_mask_fcs)
            for _ in range(num_stages)
        )
        self.criterion = criterion

    def forward(self, neck: torch.Tensor, vit_features: torch.Tensor, classifier: TextClassifier,
                all_stages: bool = True) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            neck: (B, C, Hp/4, Wp/4); vit_features: (B, Cv, Hp/16, Wp/16).
            all_stages: False (inference) computes only the last stage's outputs: the earlier
                stages' class logits and masks feed only the training loss.
        Returns:
            per stage (the last one only without ``all_stages``): class logits (B, N, T + 1)
            and mask logits (B, N, Hp/4, Wp/4).
        """
        features = self.vas(neck, classifier.weight)
        vit_up = self.output_upscaling(vit_features)
        kernels = self.object_kernels.weight.expand(neck.shape[0], -1, -1)
        masks = pixel_products(kernels, features)
        class_logits, mask_logits = [], []
        last = len(self.mask_heads) - 1
        for i, stage in enumerate(self.mask_heads):
            logits, masks, kernels = stage(features, vit_up, kernels, masks, classifier, all_stages or i == last)
            if all_stages or i == last:
                class_logits.append(logits)
                mask_logits.append(masks)
        return class_logits, mask_logits
