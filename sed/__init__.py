"""Fast open-vocabulary segmentation on detectron2: SED and EOV-Seg.

Importing the package registers the ``SED`` and ``EOV_SEG`` meta-architectures, their model
families (:mod:`sed.family`) and the datasets.
"""
try:
    import detectron2  # noqa: F401
except ModuleNotFoundError as error:
    # detectron2 is not on the package index under its own name, so pip cannot install it as a
    # declared dependency: say how to get it instead of failing deep inside an import.
    if error.name != "detectron2":
        raise
    raise ImportError("sed needs detectron2, which pip does not install with it: `pip install --no-build-isolation "
                      "'git+https://github.com/facebookresearch/detectron2.git'` or `bash tools/install.sh` "
                      "(INSTALL.md, \"Installing as a package\")") from None

from . import data  # noqa: F401  (registers datasets)
from .config import add_eov_seg_config, add_project_config, add_sed_config
from .modeling import SED, EOV_SEG
from .family import ModelFamily, get_family, register_family
from .predictor import (Panoptic, PanopticSegment, Predictor, SEDPredictor, Segmentation, parse_vocabulary_spec,
                        resolve_vocabulary)

__all__ = ["EOV_SEG", "SED", "ModelFamily", "Panoptic", "PanopticSegment", "Predictor", "SEDPredictor", "Segmentation",
           "add_eov_seg_config", "add_project_config", "add_sed_config", "get_family", "parse_vocabulary_spec",
           "register_family", "resolve_vocabulary"]
