"""The project's meta-architectures, one subpackage per model; importing registers them."""
from .sed import SED

__all__ = ["SED"]
