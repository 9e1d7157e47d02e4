"""The SED meta-architecture: CLIP encoder -> cost map -> gradual fusion decoder."""
import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from ...clip.builder import create_clip_model, resolve_model_name
from ...clip.text import PROMPT_TEMPLATES, ClassEmbeddingCache
from ...config import inference_dtype
from ...vocabulary import load_class_names
from ..base import OpenVocabularyModel
from .clip_encoder import CLIPImageEncoder
from .cost_map import CostMap
from .decoder import GradualFusionDecoder
from .loss import check_labels, chunked_sem_seg_losses, sem_seg_losses

logger = logging.getLogger(__name__)


_RELEASED = "sem_seg_head.predictor."
# Released checkpoint prefixes -> this implementation's module names.
RELEASED_KEY_PREFIXES = {
    _RELEASED + "clip_model.": "encoder.clip.",
    _RELEASED + "transformer.conv1.": "cost_map.embed.",
    _RELEASED + "transformer.decoder_guidance_projection.": "decoder.encoder_guidance.",
    _RELEASED + "transformer.decoder_corr_guidance_projection.": "decoder.cost_guidance.",
    _RELEASED + "transformer.head.": "decoder.head.",
    **{_RELEASED + f"transformer.head{i}.": f"decoder.rejection_heads.{i}." for i in range(3)},
    **{
        _RELEASED + f"transformer.decoder{i + 1}.{old}.": f"decoder.stages.{i}.{new}."
        for i in range(3)
        for old, new in (("cnext", "spatial"), ("attention", "classes"), ("up", "up"), ("conv.double_conv", "fuse"))
    },
}


def rename_released_keys(state_dict: Dict[str, torch.Tensor], prefix: str = "") -> None:
    """Rename, in place, the keys of a released SED checkpoint to this model's names."""
    for key in [k for k in state_dict if k.startswith(prefix + _RELEASED)]:
        rest = key[len(prefix):]
        for old, new in RELEASED_KEY_PREFIXES.items():
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                break


@META_ARCH_REGISTRY.register()
class SED(OpenVocabularyModel):
    """SED: a simple encoder-decoder for open-vocabulary semantic segmentation.

    Input: detectron2's list of dicts with ``image`` (3, H, W) RGB 0..255 (and ``sem_seg``
    (H, W) train ids to train; ``height``/``width`` of the wanted output to test).
    Output: training, ``{"loss_sem_seg_0".."loss_sem_seg_3"}``; inference, a list of
    ``{"sem_seg": (T, height, width) probabilities}``.
    """

    @configurable
    def __init__(
        self,
        *,
        encoder: CLIPImageEncoder,
        class_embeddings: ClassEmbeddingCache,
        cost_map: CostMap,
        decoder: GradualFusionDecoder,
        train_class_names: List[str],
        test_class_names: List[str],
        guidance_features: Sequence[str],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        image_size: int,
        size_divisibility: int,
        ignore_value: int,
        fast_inference: bool,
        topk: int,
        inference_dtype: Optional[torch.dtype] = None,
    ):
        """
        Args:
            encoder: CLIP image encoder (holds the whole CLIP model).
            class_embeddings: text-embedding cache for the vocabularies.
            cost_map: cost volume and its embedding.
            decoder: the gradual fusion decoder.
            train_class_names, test_class_names: vocabularies ("name, synonym" allowed).
            guidance_features: encoder features guiding decoder stages 1..3.
            pixel_mean, pixel_std: CLIP normalisation of 0..255 RGB input.
            image_size: side of the square input of the CLIP image tower.
            size_divisibility: training images are padded to a multiple of it.
            ignore_value: label of unlabelled pixels.
            fast_inference, topk: category early rejection at test time.
            inference_dtype: autocast type at inference (None: float32). The outputs are
                float32 either way.
        """
        super().__init__(class_embeddings=class_embeddings, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         inference_dtype=inference_dtype)
        self.encoder = encoder
        self.cost_map = cost_map
        self.decoder = decoder
        self.train_class_names = train_class_names
        self.test_class_names = test_class_names
        self.guidance_features = tuple(guidance_features)
        self.image_size = image_size
        self.size_divisibility = size_divisibility
        self.ignore_value = ignore_value
        self.fast_inference = fast_inference
        self.topk = topk
        # The CLIP image tower trains; its text tower and logit scale stay frozen.
        for name, param in self.encoder.clip.named_parameters():
            param.requires_grad = name.startswith("visual.")
        self.use_channels_last()
        self.register_load_state_dict_pre_hook(self._load_released_keys)

    @classmethod
    def from_config(cls, cfg):
        enc, head = cfg.MODEL.ENC, cfg.MODEL.SEM_SEG_HEAD
        model_name = resolve_model_name(enc.CLIP_MODEL_NAME)
        # A SED checkpoint holds the whole CLIP model: skip pretrained CLIP weights then.
        clip = create_clip_model(model_name, enc.CLIP_PRETRAINED_WEIGHTS, download=not cfg.MODEL.WEIGHTS)
        encoder = CLIPImageEncoder(clip)
        templates = PROMPT_TEMPLATES[head.PROMPT_TEMPLATES]
        return {
            "encoder": encoder,
            "class_embeddings": ClassEmbeddingCache(
                model_name=model_name, templates=templates, cache_dir=head.TEXT_CACHE_DIR
            ),
            "cost_map": CostMap(num_templates=len(templates), hidden_dim=head.HIDDEN_DIMS),
            "decoder": GradualFusionDecoder(
                hidden_dim=head.HIDDEN_DIMS,
                decoder_dims=head.DECODER_DIMS,
                guidance_dims=head.DECODER_GUIDANCE_PROJ_DIMS,
                encoder_channels=[encoder.feature_channels[f] for f in head.GUIDANCE_FEATURES],
                num_templates=len(templates),
                kernel_sizes=head.KERNEL_SIZE,
                num_heads=head.NUM_HEADS,
                pooling_size=head.POOLING_SIZES,
                chunk_size=head.CLASS_CHUNK_SIZE,
                checkpoint_chunks=head.TRAIN_CHECKPOINT_CHUNKS,
            ),
            "train_class_names": load_class_names(head.TRAIN_CLASS_JSON),
            "test_class_names": load_class_names(head.TEST_CLASS_JSON),
            "guidance_features": head.GUIDANCE_FEATURES,
            "pixel_mean": cfg.MODEL.CLIP_PIXEL_MEAN,
            "pixel_std": cfg.MODEL.CLIP_PIXEL_STD,
            "image_size": enc.IMAGE_SIZE,
            "size_divisibility": cfg.MODEL.SIZE_DIVISIBILITY,
            "ignore_value": head.IGNORE_VALUE,
            "fast_inference": cfg.TEST.FAST_INFERENCE,
            "topk": cfg.TEST.TOPK,
            "inference_dtype": inference_dtype(cfg),
        }

    @staticmethod
    def _load_released_keys(module, state_dict, prefix, *args):
        rename_released_keys(state_dict, prefix)

    def text_embeddings(self, class_names: Sequence[str]) -> torch.Tensor:
        """(T, P, C) class embeddings of ``class_names`` from the current weights (cached)."""
        return self.class_embeddings.get(self.encoder.clip, class_names)

    def preprocess(self, batched_inputs: List[dict]) -> torch.Tensor:
        """Normalise and resize the images to the CLIP input: (B, 3, S, S).

        Training pads the batch (to a multiple of ``size_divisibility``) before resizing;
        inference resizes each image on its own, so batching never changes an output.
        """
        images = self.normalize(batched_inputs)
        size = (self.image_size, self.image_size)
        if self.training:
            batch = ImageList.from_tensors(images, self.size_divisibility).tensor
            batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
        else:
            batch = torch.cat([F.interpolate(x[None], size=size, mode="bilinear", align_corners=False) for x in images])
        return batch.contiguous(memory_format=torch.channels_last)

    def forward(self, batched_inputs: List[dict]):
        names = self.train_class_names if self.training else self.test_class_names
        text = self.text_embeddings(names)
        with self.inference_autocast():
            return self.forward_with_text(batched_inputs, text)

    def forward_with_text(self, batched_inputs: List[dict], text: torch.Tensor):
        """Losses (training) or per-image probabilities; ``text``: (T, P, C) class embeddings."""
        if self.training:
            labels = torch.stack([x["sem_seg"] for x in batched_inputs])
            # Checked on the host, where the loader leaves them, and uploaded before the network
            # is queued: on a GPU the check and the upload wait for the work queued before them.
            check_labels(labels, text.shape[0], self.ignore_value)
            labels = labels.to(self.device)
        features = self.encoder(self.preprocess(batched_inputs))
        cost = self.cost_map.cost_volume(features["clip_vis_dense"], text)
        embedding = self.cost_map(cost)
        # Encoder guidance is detached: the image tower learns only through the cost map.
        guidance = self.decoder.project_guidance([features[f].detach() for f in self.guidance_features])
        if self.training:
            logits = self.decoder(embedding, cost, guidance)
            # The chunked loss goes with the recomputed decoder chunks (TRAIN_CHECKPOINT_CHUNKS).
            losses = chunked_sem_seg_losses if self.decoder.recompute else sem_seg_losses
            return losses(logits, labels, self.ignore_value)
        if self.fast_inference:
            probs = self.decoder.forward_fast(embedding, cost, guidance, self.topk)
        else:
            probs = self.decoder(embedding, cost, guidance)[0].sigmoid()
        results = []
        for p, x in zip(probs.float(), batched_inputs):
            size = (x.get("height", x["image"].shape[-2]), x.get("width", x["image"].shape[-1]))
            results.append({"sem_seg": F.interpolate(p[None], size=size, mode="bilinear", align_corners=False)[0]})
        return results
