"""Vocabulary-Aware Selection (``light_weight_decoder.vas``): weights each pixel of the neck
by how strongly it responds to some name of the vocabulary (or void)."""
import torch
from detectron2.layers import DepthwiseSeparableConv2d, NaiveSyncBatchNorm
from torch import nn

from ...fused import fused_kernels_apply, gelu_algorithm, linear

# Pixels per band of the inference path: their embeddings and attention stay in cache.
PIXELS_PER_BAND = 2048


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
        # The classifier holds the float32 text embeddings; a model cast to half precision
        # computes in its weights' type.
        guide = self.guide_fc(classifier.to(self.guide_fc.weight.dtype)) / classifier.shape[-1] ** 0.5  # (S + 1, D)
        if self.training or torch.is_grad_enabled():
            attention = torch.einsum("bdhw,sd->bhws", self.embed_conv(neck), guide)
            best = attention.softmax(dim=-1).amax(dim=-1).unsqueeze(1)  # (B, 1, h, w)
        else:
            best = self.best_response_in_bands(neck, guide)
        return neck * (best * self.scale + self.offset)

    def best_response_in_bands(self, neck: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Inference: each pixel's best softmax response, computed as in training but a band
        of ``PIXELS_PER_BAND`` pixels at a time from the 1x1 convolution on (its BatchNorm
        folded into it), so that neither the (B, D, h, w) embeddings nor the (B, h, w, S + 1)
        attention is ever held whole: a band's working set stays in cache, which makes it faster
        than the whole-map computation on the CPU. The GELU runs in the matrix product's epilogue
        where the fused kernels apply (:mod:`sed.fused`).

        Args:
            neck: (B, C, h, w); guide: (S + 1, D), scaled by D^-1/2.
        Returns:
            (B, 1, h, w).
        """
        b, _, h, w = neck.shape
        pointwise = self.embed_conv.pointwise
        bn = pointwise.norm
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        weight = pointwise.weight.flatten(1) * scale[:, None]  # (D, C)
        bias = bn.bias - bn.running_mean * scale
        pixels = self.embed_conv.depthwise(neck).permute(0, 2, 3, 1).reshape(b * h * w, -1)  # (P, C)
        gelu = gelu_algorithm(pointwise.activation)
        if fused_kernels_apply(pixels) and gelu is not None:
            def response(band: torch.Tensor) -> torch.Tensor:  # (p, C) -> (p, S + 1)
                return linear(linear(band, weight, bias, gelu=gelu), guide)
        else:
            def response(band: torch.Tensor) -> torch.Tensor:
                return pointwise.activation(torch.addmm(bias, band, weight.t())) @ guide.t()
        # An exported graph takes any image size: one band there.
        bands = [pixels] if torch.compiler.is_exporting() else pixels.split(PIXELS_PER_BAND)
        best = [response(band).softmax(dim=-1).amax(dim=-1) for band in bands]
        return torch.cat(best).view(b, h, w).unsqueeze(1)
