"""Training data pipelines, selected by INPUT.DATASET_MAPPER_NAME: semantic (SED: resize,
crop with the category-area constraint, SSD colour augmentation, flip, padding to the crop
size) and panoptic with large-scale jitter (EOV-Seg).
"""
import copy
import logging
from typing import Callable, Dict, List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances
from fvcore.transforms.transform import Transform
from panopticapi.utils import rgb2id

logger = logging.getLogger(__name__)


class ColorAugSSDTransform(Transform):
    """SSD's photometric distortions on a uint8 RGB/BGR image: random brightness, contrast,
    saturation and hue, contrast either before or after the colour changes.
    """

    def __init__(self, img_format: str, brightness_delta: int = 32, contrast_low: float = 0.5,
                 contrast_high: float = 1.5, saturation_low: float = 0.5,
                 saturation_high: float = 1.5, hue_delta: int = 18):
        super().__init__()
        assert img_format in ("BGR", "RGB")
        self.is_rgb = img_format == "RGB"
        self._set_attributes(locals())

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        import cv2

        img = img[:, :, ::-1] if self.is_rgb else img  # the distortions work in BGR/HSV
        img = self._blend(img, 1.0, self.brightness_delta)
        contrast_first = np.random.randint(2)
        if contrast_first:
            img = self._blend(img, np.random.uniform(self.contrast_low, self.contrast_high), 0)
        if np.random.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[:, :, 1] = np.clip(hsv[:, :, 1].astype(float) * np.random.uniform(self.saturation_low, self.saturation_high), 0, 255)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if np.random.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + np.random.randint(-self.hue_delta, self.hue_delta)) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if not contrast_first:
            img = self._blend(img, np.random.uniform(self.contrast_low, self.contrast_high), 0)
        return np.ascontiguousarray(img[:, :, ::-1] if self.is_rgb else img)

    @staticmethod
    def _blend(img: np.ndarray, alpha: float, delta: int) -> np.ndarray:
        """With probability 1/2: img * alpha + beta, beta uniform in [-delta, delta]."""
        if not np.random.randint(2):
            return img
        beta = np.random.uniform(-delta, delta) if delta else 0.0
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class ColorAugSSD(T.Augmentation):
    def __init__(self, img_format: str):
        super().__init__()
        self.img_format = img_format

    def get_transform(self, image):
        return ColorAugSSDTransform(self.img_format)


class SemanticSegMapper:
    """Dataset dict -> ``{"image": (3, S, S) uint8 tensor, "sem_seg": (S, S) int64 tensor, ...}``
    with S the crop size: image padded with 128, label with the ignore value.
    """

    @configurable
    def __init__(self, *, augmentations: List[T.Augmentation], image_format: str,
                 ignore_label: int, pad_size: tuple):
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.pad_size = tuple(pad_size)
        logger.info("Training augmentations: %s", augmentations)

    @classmethod
    def from_config(cls, cfg):
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                     cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
        if cfg.INPUT.CROP.ENABLED:
            augs.append(T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE))
        if cfg.INPUT.COLOR_AUG_SSD:
            augs.append(ColorAugSSD(cfg.INPUT.FORMAT))
        augs.append(T.RandomFlip())
        return {
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "pad_size": cfg.INPUT.CROP.SIZE if cfg.INPUT.CROP.ENABLED else (0, 0),
        }

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        label = utils.read_image(dataset_dict.pop("sem_seg_file_name"))
        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        image, label = aug_input.image, aug_input.sem_seg
        pad_h, pad_w = max(self.pad_size[0] - image.shape[0], 0), max(self.pad_size[1] - image.shape[1], 0)
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=128)
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=self.ignore_label)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["sem_seg"] = torch.as_tensor(label.astype("int64"))
        return dataset_dict


class PanopticLSJMapper:
    """Panoptic dataset dict -> ``{"image": (3, S, S) uint8 tensor, "instances": Instances with
    gt_classes (n,) int64 and gt_masks (n, S, S) bool, ...}``, with large-scale jitter: random
    flip, resize by a random scale of S x S, S x S crop, padding (image 128, panoptic map an id
    no segment has). Crowd segments are dropped (their pixels belong to no target).
    """

    @configurable
    def __init__(self, *, augmentations: List[T.Augmentation], image_format: str):
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        logger.info("Training augmentations: %s", augmentations)

    @classmethod
    def from_config(cls, cfg):
        size = cfg.INPUT.IMAGE_SIZE
        augs = [
            T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal", vertical=cfg.INPUT.RANDOM_FLIP == "vertical"),
            T.ResizeScale(min_scale=cfg.INPUT.MIN_SCALE, max_scale=cfg.INPUT.MAX_SCALE, target_height=size, target_width=size),
            T.FixedSizeCrop(crop_size=(size, size)),
        ]
        return {"augmentations": augs, "image_format": cfg.INPUT.FORMAT}

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        panoptic = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        ids = rgb2id(transforms.apply_segmentation(panoptic))
        segments = [s for s in dataset_dict.pop("segments_info") if not s["iscrowd"]]
        instances = Instances(image.shape[:2])
        instances.gt_classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
        masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *ids.shape), bool)
        instances.gt_masks = torch.from_numpy(masks)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["instances"] = instances
        return dataset_dict


# Training mappers by INPUT.DATASET_MAPPER_NAME (EOV-Seg's under its authors' name).
MAPPERS: Dict[str, Callable] = {"SemanticSegMapper": SemanticSegMapper, "coco_panoptic_lsj": PanopticLSJMapper}


def build_mapper(cfg) -> Callable:
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MAPPERS:
        raise ValueError(f"INPUT.DATASET_MAPPER_NAME={name!r}; choose one of {sorted(MAPPERS)}")
    return MAPPERS[name](cfg)
