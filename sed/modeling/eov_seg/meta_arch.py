"""The EOV-Seg meta-architecture: CNN CLIP + ViT CLIP block -> Lite Aggregator -> lightweight
decoder -> geometric ensemble with CLIP -> semantic / panoptic / instance outputs."""
import logging
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from ...clip.builder import create_clip_model, resolve_model_name
from ...clip.text import PROMPT_ENSEMBLES, PROMPT_TEMPLATES, ClassEmbeddingCache
from ...config import inference_dtype
from ...vocabulary import Vocabulary, load_vocabulary
from ..base import OpenVocabularyModel
from .cnn_clip import CNNCLIP, build_cnn_clip
from .criterion import SetCriterion
from .decoder import LightweightDecoder
from .inference import (crop_and_resize, geometric_ensemble, instance_inference, panoptic_inference,
                        semantic_inference)
from .lite_aggregator import LiteAggregator
from .text_classifier import TextClassifier, names_index
from .vit_clip import KEPT_PREFIXES, ViTFirstBlock

logger = logging.getLogger(__name__)

_VIT = "vit_backbone.clip_model."


def vocabulary_from_config(json_path: str, datasets: Sequence[str], key: str) -> Vocabulary:
    """The vocabulary file ``json_path``, or the metadata of the first of ``datasets``:
    ``stuff_classes`` (all classes in order), things from ``thing_dataset_id_to_contiguous_id``."""
    if json_path:
        return load_vocabulary(json_path)
    if not datasets:
        raise ValueError(f"MODEL.EOV_SEG.{key} is empty and there is no dataset to take the vocabulary from")
    meta = MetadataCatalog.get(datasets[0])
    if not meta.get("stuff_classes"):
        raise ValueError(f"MODEL.EOV_SEG.{key} is empty and dataset '{datasets[0]}' has no stuff_classes "
                         "metadata: give a vocabulary file")
    things = set(meta.get("thing_dataset_id_to_contiguous_id", {}).values())
    return Vocabulary(tuple(meta.stuff_classes), tuple(i in things for i in range(len(meta.stuff_classes))))


def seen_classes(train_names: Sequence[str], test_names: Sequence[str]) -> List[bool]:
    """For each test class, whether one of its names (synonyms) names a training class."""
    split = PROMPT_ENSEMBLES["per_name"].split
    seen = {n for name in train_names for n in split(name)}
    return [any(n in seen for n in split(name)) for name in test_names]


@META_ARCH_REGISTRY.register()
class EOV_SEG(OpenVocabularyModel):  # noqa: N801  (the registered name of the authors' configs)
    """EOV-Seg: efficient open-vocabulary panoptic segmentation.

    Input: detectron2's list of dicts with ``image`` (3, H, W) RGB 0..255, optional
    ``height``/``width`` of the wanted output, and to train ``instances`` (``gt_classes`` (n,)
    int64, ``gt_masks`` (n, H, W) bool). Output: training, the per-stage losses; inference, per
    image ``sem_seg`` (T, height, width), ``panoptic_seg`` ((height, width) int32 ids,
    segments) and ``instances`` as switched on. At inference each image is padded on its own
    canvas, so batching never changes an output.
    """

    @configurable
    def __init__(
        self,
        *,
        cnn_backbone: CNNCLIP,
        vit_backbone: ViTFirstBlock,
        lite_aggr: LiteAggregator,
        light_weight_decoder: LightweightDecoder,
        class_embeddings: ClassEmbeddingCache,
        embed_dim: int,
        train_vocabulary: Vocabulary,
        test_vocabulary: Vocabulary,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int,
        ensemble_alpha: float,
        ensemble_beta: float,
        ensemble_on_valid_mask: bool,
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        object_mask_threshold: float,
        overlap_threshold: float,
        detections_per_image: int,
        sem_seg_postprocess_before_inference: bool,
        inference_dtype: Optional[torch.dtype] = None,
    ):
        """
        Args:
            cnn_backbone, vit_backbone: the frozen CLIP parts.
            lite_aggr: the neck; light_weight_decoder: the decoder (and the loss).
            class_embeddings: text-embedding cache (per-name ensemble of the CNN CLIP).
            embed_dim: D, the CLIP joint embedding width.
            train_vocabulary, test_vocabulary: classes with their names and thing flags.
            pixel_mean, pixel_std: normalisation of 0..255 RGB input (ImageNet's).
            size_divisibility: images are zero-padded to a multiple of it.
            ensemble_alpha, ensemble_beta: CLIP's exponent for seen / unseen classes.
            ensemble_on_valid_mask: proposals empty at CLIP's resolution keep the decoder's
                prediction.
            semantic_on, panoptic_on, instance_on: the outputs at inference.
            object_mask_threshold, overlap_threshold: panoptic post-processing.
            detections_per_image: instances kept per image.
            sem_seg_postprocess_before_inference: semantic output from resized masks.
            inference_dtype: autocast type of the network at inference (None: float32); the
                ensemble and post-processing run in float32.
        """
        super().__init__(class_embeddings=class_embeddings, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         inference_dtype=inference_dtype)
        self.cnn_backbone = cnn_backbone
        self.vit_backbone = vit_backbone
        self.lite_aggr = lite_aggr
        self.light_weight_decoder = light_weight_decoder
        self.void_embedding = nn.Embedding(1, embed_dim)
        self.train_vocabulary = train_vocabulary
        self.test_vocabulary = test_vocabulary
        self.size_divisibility = size_divisibility
        self.ensemble_alpha, self.ensemble_beta = ensemble_alpha, ensemble_beta
        self.ensemble_on_valid_mask = ensemble_on_valid_mask
        self.semantic_on, self.panoptic_on, self.instance_on = semantic_on, panoptic_on, instance_on
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.detections_per_image = detections_per_image
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        # Inference also feeds NHWC images; training NCHW ones (its backward pass is slower
        # with NHWC input on CPU).
        self.use_channels_last()
        self.register_load_state_dict_pre_hook(self._drop_unused_vit_keys)

    @classmethod
    def from_config(cls, cfg):
        eov, ov = cfg.MODEL.EOV_SEG, cfg.MODEL.OV_HEAD
        train_vocabulary = vocabulary_from_config(eov.TRAIN_CLASS_JSON, cfg.DATASETS.TRAIN, "TRAIN_CLASS_JSON")
        test_vocabulary = vocabulary_from_config(eov.TEST_CLASS_JSON, cfg.DATASETS.TEST, "TEST_CLASS_JSON")
        if len(train_vocabulary) != eov.NUM_CLASSES:
            raise ValueError(f"MODEL.EOV_SEG.NUM_CLASSES is {eov.NUM_CLASSES} but the training vocabulary "
                             f"({eov.TRAIN_CLASS_JSON or cfg.DATASETS.TRAIN[0]}) has {len(train_vocabulary)} classes")
        # An EOV-Seg checkpoint holds both CLIP models: skip pretrained CLIP weights then.
        download = not cfg.MODEL.WEIGHTS
        cnn_name = resolve_model_name(ov.CLIP_MODEL_NAME)
        cnn = build_cnn_clip(create_clip_model(cnn_name, ov.CLIP_PRETRAINED_WEIGHTS, download=download))
        vit = ViTFirstBlock(create_clip_model(ov.CLIP_VIT_MODEL_NAME, ov.CLIP_VIT_PRETRAINED_WEIGHTS, download=download))
        return {
            "cnn_backbone": cnn,
            "vit_backbone": vit,
            "lite_aggr": LiteAggregator(
                in_channels=[cnn.feature_channels[f] for f in eov.IN_FEATURES],
                agg_dim=eov.AGG_DIM, hidden_dim=eov.HIDDEN_DIM,
            ),
            "light_weight_decoder": LightweightDecoder(
                hidden_dim=eov.HIDDEN_DIM, vit_dim=vit.width, embed_dim=ov.EMBED_DIM,
                num_proposals=eov.NUM_PROPOSALS, num_stages=eov.NUM_STAGES,
                kernel_size_1d=eov.CONV_KERNEL_SIZE_1D, num_mask_fcs=eov.NUM_MASK_FCS,
                criterion=SetCriterion(
                    num_classes=eov.NUM_CLASSES, class_weight=eov.CLASS_WEIGHT, mask_weight=eov.MASK_WEIGHT,
                    dice_weight=eov.DICE_WEIGHT, no_object_weight=eov.NO_OBJECT_WEIGHT,
                    num_points=eov.TRAIN_NUM_POINTS, oversample_ratio=eov.OVERSAMPLE_RATIO,
                    importance_sample_ratio=eov.IMPORTANCE_SAMPLE_RATIO,
                ),
            ),
            "class_embeddings": ClassEmbeddingCache(
                model_name=cnn_name, templates=PROMPT_TEMPLATES["vild"], cache_dir=eov.TEXT_CACHE_DIR,
                ensemble="per_name",
            ),
            "embed_dim": ov.EMBED_DIM,
            "train_vocabulary": train_vocabulary,
            "test_vocabulary": test_vocabulary,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": eov.SIZE_DIVISIBILITY,
            "ensemble_alpha": ov.GEOMETRIC_ENSEMBLE_ALPHA,
            "ensemble_beta": ov.GEOMETRIC_ENSEMBLE_BETA,
            "ensemble_on_valid_mask": ov.ENSEMBLE_ON_VALID_MASK,
            "semantic_on": eov.TEST.SEMANTIC_ON,
            "panoptic_on": eov.TEST.PANOPTIC_ON,
            "instance_on": eov.TEST.INSTANCE_ON,
            "object_mask_threshold": eov.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": eov.TEST.OVERLAP_THRESHOLD,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "sem_seg_postprocess_before_inference": eov.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE,
            "inference_dtype": inference_dtype(cfg),
        }

    # --- checkpoints -------------------------------------------------------------------------

    @staticmethod
    def _drop_unused_vit_keys(module, state_dict, prefix, *args):
        """The one rule for released keys the computation never uses: of the ViT CLIP, only
        the patch embedding, positional embedding, ``ln_pre`` and block 0 are loaded."""
        for key in [k for k in state_dict if k.startswith(prefix + _VIT)]:
            if not key[len(prefix + _VIT):].startswith(KEPT_PREFIXES):
                del state_dict[key]

    # --- vocabulary ----------------------------------------------------------------------------

    def names_per_class(self, vocabulary: Vocabulary) -> List[List[str]]:
        split = PROMPT_ENSEMBLES["per_name"].split
        return [split(name) for name in vocabulary.names]

    def text_embeddings(self, class_names: Sequence[str]) -> torch.Tensor:
        """(S, C) embeddings of the names (synonyms) of ``class_names`` from the current
        weights (cached)."""
        return self.class_embeddings.get(self.cnn_backbone.clip_model, class_names)

    def text_classifier(self, vocabulary: Vocabulary) -> TextClassifier:
        """The classifier of ``vocabulary``: cached name embeddings and the current void."""
        names = self.text_embeddings(vocabulary.names)
        counts = [len(n) for n in self.names_per_class(vocabulary)]
        return TextClassifier(names, self.void_embedding.weight, names_index(counts))

    def seen_classes(self) -> torch.Tensor:
        """(T,) bool: test classes sharing a name with some training class."""
        seen = seen_classes(self.train_vocabulary.names, self.test_vocabulary.names)
        return torch.tensor(seen, device=self.device)

    # --- forward -------------------------------------------------------------------------------

    def predict(self, images: torch.Tensor, classifier: TextClassifier,
                all_stages: bool = True) -> Tuple[List[torch.Tensor], List[torch.Tensor], Dict]:
        """(B, 3, Hp, Wp) padded images -> per-stage class logits (B, N, T + 1) and mask logits
        (B, N, Hp/4, Wp/4) (the last stage's only without ``all_stages``), and the CNN CLIP
        features."""
        features = self.cnn_backbone(images)
        vit = self.vit_backbone(images)
        neck = self.lite_aggr(features)
        class_logits, mask_logits = self.light_weight_decoder(neck, vit, classifier, all_stages)
        return class_logits, mask_logits, features

    def forward(self, batched_inputs: List[dict]):
        if self.training:
            return self.losses(batched_inputs)
        classifier = self.text_classifier(self.test_vocabulary)
        # Images padded to the same canvas on their own run together.
        groups: Dict[Tuple[int, int], List[int]] = defaultdict(list)
        div = self.size_divisibility
        for i, x in enumerate(batched_inputs):
            h, w = x["image"].shape[-2:]
            groups[(-(-h // div) * div, -(-w // div) * div)].append(i)
        results: List[Optional[dict]] = [None] * len(batched_inputs)
        for indices in groups.values():
            group = [batched_inputs[i] for i in indices]
            for i, out in zip(indices, self.inference(group, classifier)):
                results[i] = out
        return results

    def losses(self, batched_inputs: List[dict]) -> Dict[str, torch.Tensor]:
        """Training: the batch padded to one canvas, as the reference trains."""
        images = ImageList.from_tensors(self.normalize(batched_inputs), self.size_divisibility)
        hp, wp = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            instances = x["instances"].to(self.device)
            masks = instances.gt_masks
            masks = masks.tensor if hasattr(masks, "tensor") else masks
            padded = masks.new_zeros((masks.shape[0], hp, wp))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": instances.gt_classes, "masks": padded})
        class_logits, mask_logits, _ = self.predict(images.tensor, self.text_classifier(self.train_vocabulary))
        return self.light_weight_decoder.criterion(class_logits, mask_logits, targets)

    def head_outputs(self, images: torch.Tensor, classifier: TextClassifier,
                     seen: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Everything before the data-dependent post-processing (what an exported graph computes).

        Args:
            images: (B, 3, Hp, Wp) normalised images padded to a multiple of ``size_divisibility``.
            classifier: the vocabulary's text classifier (T classes).
            seen: (T,) bool, classes named in the training vocabulary (:func:`seen_classes`).
        Returns:
            (B, N, T + 1) float32 class log-probabilities of the N proposals after the geometric
            ensemble (void last), and (B, N, Hp, Wp) float32 mask logits.
        """
        with self.inference_autocast():
            class_logits, mask_logits, features = self.predict(
                images.contiguous(memory_format=torch.channels_last), classifier, all_stages=False)
            dense = features["clip_vis_dense"]
            clip_masks = F.interpolate(mask_logits[-1], size=dense.shape[-2:], mode="bilinear", align_corners=False)
            clip_logits = classifier.logits(self.cnn_backbone.embed_masks(dense, clip_masks),
                                            self.cnn_backbone.logit_scale)
        logits, masks = class_logits[-1].float(), mask_logits[-1].float()
        clip_logits, clip_masks = clip_logits.float(), clip_masks.float()
        valid = (clip_masks > 0).flatten(2).any(-1) if self.ensemble_on_valid_mask else None
        final = geometric_ensemble(logits, clip_logits, seen, self.ensemble_alpha, self.ensemble_beta, valid)
        return final, F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict], classifier: TextClassifier) -> List[dict]:
        """Outputs of images that share one padded canvas."""
        images = ImageList.from_tensors(self.normalize(batched_inputs), self.size_divisibility)
        seen = self.seen_classes()
        # Uploaded before the network is queued (on a GPU an upload waits for the queue), and
        # only for the instances: the panoptic segments read the flags on the host.
        isthing = torch.tensor(self.test_vocabulary.isthing, device=self.device) if self.instance_on else None
        final, masks = self.head_outputs(images.tensor, classifier, seen)
        resize_first = self.panoptic_on or self.instance_on or self.sem_seg_postprocess_before_inference
        results = []
        for cls, mask, x, size in zip(final, masks, batched_inputs, images.image_sizes):
            height, width = x.get("height", size[0]), x.get("width", size[1])
            out = {}
            if resize_first:
                mask = crop_and_resize(mask, size, height, width)
                if self.semantic_on:
                    out["sem_seg"] = semantic_inference(cls, mask)
            elif self.semantic_on:
                out["sem_seg"] = crop_and_resize(semantic_inference(cls, mask), size, height, width)
            if self.panoptic_on:
                out["panoptic_seg"] = panoptic_inference(
                    cls, mask, self.test_vocabulary.isthing, object_mask_threshold=self.object_mask_threshold,
                    overlap_threshold=self.overlap_threshold)
            if self.instance_on:
                out["instances"] = instance_inference(
                    cls, mask, isthing, max_detections=self.detections_per_image, things_only=self.panoptic_on)
            results.append(out)
        return results
