"""SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic Segmentation, on detectron2.

Importing the package registers the ``SED`` meta-architecture and the datasets.
"""
from . import data  # noqa: F401  (registers datasets)
from .config import add_sed_config
from .modeling import SED
from .predictor import SEDPredictor, Segmentation, resolve_vocabulary

__all__ = ["SED", "SEDPredictor", "Segmentation", "add_sed_config", "resolve_vocabulary"]
