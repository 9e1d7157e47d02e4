"""SED's ONNX graph (:mod:`sed.export`): ``image`` (3, H, W) float32 RGB 0..255 and ``text``
(T, P, C) prompt embeddings -> ``probabilities`` (T, H, W). The normalisation, the resize to
the CLIP input and back are in the graph; with ``TEST.FAST_INFERENCE`` so is category early
rejection (rejected classes 0).

The graph runs the decoder's per-class steps for all classes at once (one chunk), not a few
classes at a time as PyTorch does on the CPU: a ``Scan`` over class chunks (``torch.export``'s
``scan``, with the chunk's weights moved into the loop body so that onnxruntime can pre-pack
them) and chunking the class attention's pixels both ran slower in onnxruntime than the single
chunk. The price is memory with large vocabularies (docs/benchmarks.md).
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from ...clip.text import encode_tokens


class SEDGraph(nn.Module):
    """SED's image side: (3, H, W) RGB 0..255 and (T, P, C) prompt embeddings -> (T, H, W)
    probabilities (the model's plain or early-rejection path, as configured)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.model.forward_with_text([{"image": image}], text)[0]["sem_seg"]


def example_inputs(model: nn.Module, height: int, width: int):
    """A random image and random embeddings of 3 classes."""
    clip, cache = model.encoder.clip, model.class_embeddings
    with torch.no_grad():
        dim = encode_tokens(clip, cache.tokenizer(["probe"])).shape[-1]
    return torch.rand(3, height, width) * 255, F.normalize(torch.randn(3, len(cache.templates), dim), dim=-1)


def dynamic_shapes(model: nn.Module, dynamic: bool):
    image = {1: Dim("height", min=2), 2: Dim("width", min=2)} if dynamic else None
    return image, {0: Dim("classes", min=1)}


def metadata(model: nn.Module, cfg) -> dict:
    return {"fast_inference": model.fast_inference, "topk": model.topk}
