"""The Lite Aggregator neck: a top-down path of modulated deformable convolutions over the
CNN CLIP's res2..res5, fused into one 1/4-resolution map with coordinates (``lite_aggr.*``).

The deformable convolutions run through ``torchvision.ops.deform_conv2d`` (CUDA, CPU training,
and exported graphs, where it becomes ONNX's ``DeformConv``); at CPU inference they multiply
once and sample the products at the displaced taps with ``grid_sample``
(``sampled_deform_conv``: the same outputs within float32 rounding; sampling the O output
channels' products instead of the C = 2O inputs makes it several times faster than
torchvision's CPU kernel).
BatchNorms synchronise their batch statistics over processes while training (detectron2's
``NaiveSyncBatchNorm``, which also works on CPU with gloo).
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import NaiveSyncBatchNorm
from torch import nn
from torchvision.ops import deform_conv2d


def sampled_deform_conv(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Modulated deformable 3x3 convolution (stride 1, padding 1, one offset group, no bias)
    as one matrix product and bilinear sampling of its result, tap by tap.

    Sampling is linear, so each tap's weights are applied first, at the pixels, and the
    products are sampled at the tap's displaced positions: the same sum as sampling the input
    and multiplying, with the sampling done on the O output channels instead of the C input
    ones (half as many in every neck level) and no (9C, h * w) column matrix.

    Args:
        x: (B, C, h, w); offset: (B, 18, h, w), (dy, dx) of each tap, row-major taps;
        weight: (O, C, 3, 3); mask: (B, 9, h, w).
    Returns:
        (B, O, h, w), as ``torchvision.ops.deform_conv2d``: a tap that falls outside the map
        reads zeros, bilinearly blended with the pixels it overlaps.
    """
    b, c, h, w = x.shape
    o = weight.shape[0]
    taps = torch.arange(-1, 2, device=x.device, dtype=x.dtype)
    offset = offset.view(b, 9, 2, h, w)
    rows = offset[:, :, 0] + (torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
                              + taps.repeat_interleave(3).view(1, 9, 1, 1))
    cols = offset[:, :, 1] + (torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
                              + taps.repeat(3).view(1, 9, 1, 1))
    # Pixel coordinates -> grid_sample's [-1, 1] (align_corners=False: pixel i is at (2i + 1) / n - 1).
    grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1).view(b * 9, h, w, 2)
    pixels = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
    products = (pixels @ weight.permute(1, 2, 3, 0).reshape(c, 9 * o)).view(b, h, w, 9, o)
    # As B*9 channels-last maps of O channels (memory (B, 9, h, w, O)): grid_sample reads them fastest on CPU.
    products = products.permute(0, 3, 1, 2, 4).contiguous().view(b * 9, h, w, o).permute(0, 3, 1, 2)
    sampled = F.grid_sample(products, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (sampled.view(b, 9, o, h, w) * mask.view(b, 9, 1, h, w)).sum(dim=1)


def coordinates(n: int, like: torch.Tensor) -> torch.Tensor:
    """``torch.linspace(-1, 1, n)`` (within float rounding) on ``like``'s device and type, as
    operations that an exported graph computes for any ``n`` (its exported linspace does not)."""
    i = torch.arange(n, device=like.device, dtype=like.dtype)
    return i * 2 / i[-1:].clamp_min(1) - 1


class ModulatedDeformConv(nn.Module):
    """DCNv2, 3x3, stride 1, padding 1, one offset group, no bias."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, in, h, w); offset (B, 18, h, w), channel 2k / 2k+1 the vertical / horizontal
        displacement of tap k (row-major); mask (B, 9, h, w) in [0, 1] -> (B, out, h, w).

        Under autocast it runs in float32 (torchvision's CPU kernel has no reduced-precision
        version, and sampling coordinates need float32) and returns the input's type.
        """
        with torch.autocast(x.device.type, enabled=False):
            inputs = [t.float() for t in (x, offset, self.weight, mask)]
            if x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.compiler.is_exporting():
                out = sampled_deform_conv(*inputs)
            else:
                out = deform_conv2d(inputs[0], inputs[1], inputs[2], None, padding=1, mask=inputs[3])
        return out.to(x.dtype)


class DeformUpsample(nn.Module):
    """Modulated deformable 3x3 conv -> BN -> ReLU -> x2 transposed conv -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.dcn_offset = nn.Conv2d(in_channels, 27, kernel_size=3, padding=1)
        self.dcn = ModulatedDeformConv(in_channels, out_channels)
        self.dcn_bn = NaiveSyncBatchNorm(out_channels)
        self.up_sample = nn.ConvTranspose2d(out_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False)
        self.up_bn = NaiveSyncBatchNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, h, w) -> (B, out, 2h, 2w)."""
        offset_mask = self.dcn_offset(x)
        offset, mask = offset_mask[:, :18], offset_mask[:, 18:].sigmoid()
        x = F.relu(self.dcn_bn(self.dcn(x, offset, mask)))
        return F.relu(self.up_bn(self.up_sample(x)))


class TopDownFusion(nn.Module):
    """Lateral 1x1 convs and deformable up-sampling from res5 to res2, then every level
    projected to ``agg_dim`` channels, up-sampled to 1/4 and summed (``lite_aggr.deconv``)."""

    def __init__(self, *, in_channels: Sequence[int], agg_dim: int):
        """
        Args:
            in_channels: channels of res2, res3, res4, res5.
            agg_dim: A, the fused width.
        """
        super().__init__()
        c2, c3, c4, c5 = in_channels
        o2, o3, o4, o5 = (c // 2 for c in in_channels)
        self.lateral_conv0 = nn.Conv2d(c5, o5, 1)
        self.lateral_conv1 = nn.Conv2d(c4, o4, 1)
        self.lateral_conv2 = nn.Conv2d(c3, o3, 1)
        self.lateral_conv3 = nn.Conv2d(c2, o2, 1)
        self.deform_conv1 = DeformUpsample(o5, o4)
        self.deform_conv2 = DeformUpsample(o4, o3)
        self.deform_conv3 = DeformUpsample(o3, o2)
        self.conv_a5 = nn.Conv2d(o5, agg_dim, 1, bias=False)
        self.conv_a4 = nn.Conv2d(o4, agg_dim, 1, bias=False)
        self.conv_a3 = nn.Conv2d(o3, agg_dim, 1, bias=False)
        self.conv_a2 = nn.Conv2d(o2, agg_dim, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(1, agg_dim, 1, 1))
        self.output_conv = nn.Conv2d(agg_dim, agg_dim, 3, padding=1)

    def forward(self, res2, res3, res4, res5) -> torch.Tensor:
        """res_i (B, c_i, Hp/2^i, Wp/2^i) -> (B, A, Hp/4, Wp/4)."""
        p5 = self.lateral_conv0(res5)
        x4 = self.lateral_conv1(res4) + self.deform_conv1(p5)
        x3 = self.lateral_conv2(res3) + self.deform_conv2(x4)
        x2 = self.lateral_conv3(res2) + self.deform_conv3(x3)

        def up(x: torch.Tensor, factor: int) -> torch.Tensor:
            return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)

        fused = up(self.conv_a5(p5), 8) + up(self.conv_a4(x4), 4) + up(self.conv_a3(x3), 2)
        return self.output_conv(fused + self.conv_a2(x2) + self.bias)


class LiteAggregator(nn.Module):
    """The neck: top-down fusion, then CoordConv to the hidden width (``lite_aggr``)."""

    def __init__(self, *, in_channels: Sequence[int], agg_dim: int, hidden_dim: int):
        super().__init__()
        self.deconv = TopDownFusion(in_channels=in_channels, agg_dim=agg_dim)
        self.loc_conv = nn.Conv2d(agg_dim + 2, hidden_dim, 1)
        for p in self.parameters():  # the recipe's initialisation
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``res2``..``res5`` -> (B, C, Hp/4, Wp/4)."""
        x = self.deconv(features["res2"], features["res3"], features["res4"], features["res5"])
        b, _, h, w = x.shape
        xs = coordinates(w, x).expand(b, 1, h, w)
        ys = coordinates(h, x).view(h, 1).expand(b, 1, h, w)
        return self.loc_conv(torch.cat([x, xs, ys], dim=1))
