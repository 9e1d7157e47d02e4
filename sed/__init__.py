"""Fast open-vocabulary segmentation on detectron2: SED and EOV-Seg.

Importing the package registers the ``SED`` and ``EOV_SEG`` meta-architectures and the datasets.
"""
from . import data  # noqa: F401  (registers datasets)
from .config import add_eov_seg_config, add_project_config, add_sed_config
from .modeling import SED, EOV_SEG
from .predictor import Panoptic, PanopticSegment, SEDPredictor, Segmentation, parse_vocabulary_spec, resolve_vocabulary

__all__ = ["EOV_SEG", "SED", "Panoptic", "PanopticSegment", "SEDPredictor", "Segmentation", "add_eov_seg_config",
           "add_project_config", "add_sed_config", "parse_vocabulary_spec", "resolve_vocabulary"]
