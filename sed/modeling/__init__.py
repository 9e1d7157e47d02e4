"""SED model: the ``SED`` meta-architecture and its parts."""
from .meta_arch import SED

__all__ = ["SED"]
