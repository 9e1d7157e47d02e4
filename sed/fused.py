"""Fused CPU kernels for inference, shared by both models: oneDNN matrix products with the bias
and GELU in their epilogue, instead of a matrix product, a bias copy and a GELU pass over the
result (memory-bound passes over the widest activations of a ConvNeXt block or of EOV-Seg's
vocabulary-aware selection).

They run only without gradients, on the CPU in float32 outside autocast, export, compilation
and tracing (a captured graph gets the plain operations, which inductor fuses on its own), with a
torch built with oneDNN (:func:`fused_kernels_apply`); callers fall back to the
released modules elsewhere, so training computes exactly what the released modules compute.
Outputs equal the unfused computation to float32 rounding (a different summation order of the
same products).
"""
from typing import Optional

import torch
from timm.layers import GELU, GELUTanh
from torch import nn


def capturing_graph() -> bool:
    """Whether the code runs under ``torch.export``, ``torch.compile`` or TorchScript tracing."""
    return torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing()


def fused_kernels_apply(x: torch.Tensor) -> bool:
    """Whether :func:`linear` may run its fused kernel for the input ``x``."""
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not capturing_graph()
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def gelu_algorithm(act: nn.Module) -> Optional[str]:
    """oneDNN's name of the GELU that ``act`` computes (``"none"``: exact, ``"tanh"``: the tanh
    approximation), or None if ``act`` is not a GELU module."""
    if type(act) is nn.GELU:
        return act.approximate
    return {GELU: "none", GELUTanh: "tanh"}.get(type(act))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           gelu: Optional[str] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, followed by GELU when ``gelu`` names one (see
    :func:`gelu_algorithm`), in one oneDNN call; only where :func:`fused_kernels_apply`.

    Args:
        x: (..., K); weight: (N, K); bias: (N,) or None.
    Returns:
        (..., N), contiguous.
    """
    if gelu is None:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], gelu)
