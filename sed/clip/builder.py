"""Building open_clip CLIP models from a model name or a model-config JSON.

Shared by every model of the project. A configured pretrained tag decides QuickGELU (the
OpenAI weights were trained with it) even when the weights themselves come from a project
checkpoint, so a checkpoint trained on top of those weights computes what it was trained with.
"""
import logging
import os

import open_clip
from torch import nn

from ..resources import RELATIVE_PATHS_NOTE, resolve_data_file

logger = logging.getLogger(__name__)


def resolve_model_name(model_name: str) -> str:
    """Return the open_clip name of ``model_name``, registering it first if it is a JSON file
    (a path read as ``sed.resources.resolve_data_file`` says: ``sed/model_configs/<x>.json`` is
    the packaged config unless the working directory has that file)."""
    if model_name.endswith(".json"):
        path = resolve_data_file(model_name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"open_clip model config {model_name!r} does not exist ({RELATIVE_PATHS_NOTE})")
        open_clip.add_model_config(path)
        return os.path.splitext(os.path.basename(model_name))[0]
    if model_name not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip model {model_name!r}: give an open_clip model name "
                         "or the path of an open_clip model-config JSON")
    return model_name


def uses_quick_gelu(model_name: str, pretrained: str) -> bool:
    """Whether the weights named by the open_clip tag ``pretrained`` need QuickGELU
    (x * sigmoid(1.702 x)), as open_clip's pretrained table says (the ``openai`` tags)."""
    if not pretrained or os.path.isfile(pretrained):
        return False
    return bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu", False))


def create_clip_model(model_name: str, pretrained: str, *, download: bool = True) -> nn.Module:
    """Build an open_clip model in float32.

    Args:
        model_name: an open_clip model name, or the path of an open_clip model-config JSON
            (registered under its file stem).
        pretrained: an open_clip pretrained tag, a local weights file, or "" for random init.
        download: load the pretrained weights; False builds the same architecture (QuickGELU
            included) with random weights, for a checkpoint that holds the whole model.
    """
    name = resolve_model_name(model_name)
    if download and pretrained and not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(
                f"CLIP weights {pretrained!r} are neither a file nor a pretrained tag of "
                f"{name!r} (tags: {tags}); use '' for random init."
            )
    quick_gelu = uses_quick_gelu(name, pretrained)
    weights = pretrained if download else ""
    logger.info("Building CLIP %s (weights: %s%s)", name, weights or "random init",
                ", QuickGELU" if quick_gelu else "")
    return open_clip.create_model(name, pretrained=weights or None, precision="fp32",
                                  force_quick_gelu=quick_gelu)
