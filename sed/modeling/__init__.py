"""The project's meta-architectures, one subpackage per model; importing registers them."""
from .eov_seg import EOV_SEG
from .sed import SED

__all__ = ["EOV_SEG", "SED"]
