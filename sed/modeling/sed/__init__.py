"""SED (CVPR 2024): CLIP encoder -> cost map -> gradual fusion decoder."""
from .meta_arch import SED

__all__ = ["SED"]
