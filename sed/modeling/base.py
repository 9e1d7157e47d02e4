"""What every meta-architecture of the project shares: input normalisation, the device it runs
on, the autocast region of reduced-precision inference, weights checked and the text-embedding
cache cleared when they are loaded (never into a compiled model), and channels-last weights."""
from contextlib import nullcontext
from typing import ContextManager, List, Optional, Sequence

import torch
from torch import nn

from ..checkpoint import check_loaded_keys
from ..clip.text import ClassEmbeddingCache
from ..compile import is_compiled


class OpenVocabularyModel(nn.Module):
    """Base of the meta-architectures: subclasses assign their modules, then call
    :meth:`use_channels_last`."""

    def __init__(self, *, class_embeddings: ClassEmbeddingCache, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], inference_dtype: Optional[torch.dtype]):
        """
        Args:
            class_embeddings: the text-embedding cache of the vocabularies.
            pixel_mean, pixel_std: (3,) normalisation of 0..255 RGB input.
            inference_dtype: autocast type at inference (None: float32).
        """
        super().__init__()
        self.class_embeddings = class_embeddings
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.inference_dtype = inference_dtype
        self.register_load_state_dict_post_hook(self._after_load)

    @staticmethod
    def _after_load(module: nn.Module, incompatible_keys) -> None:
        """Embeddings computed from the previous weights of the text tower are stale; weights
        that leave parameters unset or hold foreign entries stop (``sed.checkpoint``), and so do
        weights loaded into a compiled model (its graphs may hold the previous ones as constants)."""
        if is_compiled(module):
            raise RuntimeError("weights were loaded into a compiled model (TEST.COMPILE), whose graphs hold the "
                               "previous weights: load the weights first, then compile (sed.compile.compile_model)")
        module.class_embeddings.clear()
        check_loaded_keys(module, incompatible_keys.missing_keys, incompatible_keys.unexpected_keys)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, batched_inputs: List[dict]) -> List[torch.Tensor]:
        """Each input's ``image`` (3, H, W) 0..255 RGB -> (3, H, W), normalised, on the device, in
        the weights' floating type (float32 unless the model was cast, e.g. ``model.half()``)."""
        dtype = self.pixel_mean.dtype
        return [(x["image"].to(self.device, dtype) - self.pixel_mean) / self.pixel_std for x in batched_inputs]

    def inference_autocast(self) -> ContextManager:
        """The autocast region of inference at ``inference_dtype`` (none in training or float32)."""
        if self.training or self.inference_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.inference_dtype)

    def use_channels_last(self) -> None:
        """NHWC weights: convolutions skip layout reorders and channel-last linear layers read
        their input in place (faster on CPU, same outputs)."""
        self.to(memory_format=torch.channels_last)
