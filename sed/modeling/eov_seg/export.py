"""EOV-Seg's ONNX graph (:mod:`sed.export`): ``image`` (3, Hp, Wp) normalised and zero-padded to
a multiple of ``SIZE_DIVISIBILITY`` (:func:`sed.modeling.eov_seg.deploy.preprocess`), ``names``
(S, D) name embeddings, ``name_index`` (T, K) int64 rows of each class's names, ``seen`` (T,)
bool classes of the training vocabulary -> ``class_logprobs`` (N, T + 1) after the geometric
ensemble (void last) and ``mask_logits`` (N, Hp, Wp): the head outputs before the
data-dependent post-processing, which :func:`sed.modeling.eov_seg.deploy.postprocess` does in
NumPy. The deformable convolutions are ONNX ``DeformConv`` (opset 19), which onnxruntime runs
on the CPU."""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from .text_classifier import TextClassifier, names_index


class EOVSegGraph(nn.Module):
    """EOV-Seg's head outputs (``EOV_SEG.head_outputs``) for one normalised, padded image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, names: torch.Tensor, name_index: torch.Tensor,
                seen: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """image (3, Hp, Wp), names (S, D), name_index (T, K), seen (T,) -> class
        log-probabilities (N, T + 1) and mask logits (N, Hp, Wp)."""
        classifier = TextClassifier(names, self.model.void_embedding.weight, name_index)
        logprobs, masks = self.model.head_outputs(image[None], classifier, seen)
        return logprobs[0], masks[0]


def example_inputs(model: nn.Module, height: int, width: int):
    """A random normalised image, and 3 classes of 2, 1 and 1 random names (the first and
    last seen in training)."""
    div = model.size_divisibility
    if height % div or width % div:
        raise ValueError(f"EOV-Seg's input is padded to a multiple of MODEL.EOV_SEG.SIZE_DIVISIBILITY ({div}): "
                         f"--height {height} --width {width} is not; give the padded size")
    dim = model.void_embedding.weight.shape[1]
    index = names_index([2, 1, 1])
    return torch.randn(3, height, width), F.normalize(torch.randn(4, dim), dim=-1), index, torch.tensor([True, False, True])


def dynamic_shapes(model: nn.Module, dynamic: bool):
    div = model.size_divisibility
    image = {1: div * Dim("height_blocks", min=2), 2: div * Dim("width_blocks", min=2)} if dynamic else None
    classes = Dim("classes", min=1)
    return image, {0: Dim("names", min=1)}, {0: classes, 1: Dim("synonyms", min=1)}, {0: classes}


def metadata(model: nn.Module, cfg) -> dict:
    return {
        "pixel_mean": model.pixel_mean.flatten().tolist(), "pixel_std": model.pixel_std.flatten().tolist(),
        "size_divisibility": model.size_divisibility,
        "min_size_test": cfg.INPUT.MIN_SIZE_TEST, "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
        "train_class_names": list(model.train_vocabulary.names),
        "semantic_on": model.semantic_on, "panoptic_on": model.panoptic_on, "instance_on": model.instance_on,
        "object_mask_threshold": model.object_mask_threshold, "overlap_threshold": model.overlap_threshold,
        "detections_per_image": model.detections_per_image,
        "sem_seg_postprocess_before_inference": model.sem_seg_postprocess_before_inference,
    }
