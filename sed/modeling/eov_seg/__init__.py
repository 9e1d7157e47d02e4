"""EOV-Seg (AAAI 2025): efficient open-vocabulary panoptic segmentation, one module per part:
``cnn_clip``, ``vit_clip``, ``lite_aggregator``, ``vocabulary_selection``, ``decoder``
(with ``embedding_experts``), ``text_classifier``, ``criterion``, ``inference``, ``meta_arch``; outside
PyTorch ``export`` and ``deploy``; ``family`` registers its model family."""
from . import family  # noqa: F401  (registers the model family)
from .meta_arch import EOV_SEG

__all__ = ["EOV_SEG"]
