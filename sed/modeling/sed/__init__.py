"""SED (CVPR 2024): CLIP encoder -> cost map -> gradual fusion decoder. Importing registers the
meta-architecture and its model family (``family``)."""
from . import family  # noqa: F401  (registers the model family)
from .meta_arch import SED

__all__ = ["SED"]
