"""Model weights, loaded with checks: a file that cannot be read, weights of another model family
or of another size, and inference with no trained weights where they are needed stop with a
:class:`CheckpointError` naming the problem and the fix, before any work is done."""
import logging
import os
import pickle
from typing import Optional, Sequence

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from torch import nn

from .family import ModelFamily, config_value, families, get_family

logger = logging.getLogger(__name__)

LISTED_KEYS = 5  # keys named in a mismatch message; the log has them all


class CheckpointError(RuntimeError):
    """Weights that cannot serve the model, said with what to do."""


def family_of_keys(keys: Sequence[str]) -> Optional[ModelFamily]:
    """The registered family whose checkpoints hold most of ``keys`` (by top-level module), if
    one holds more than half of them."""
    counts = [(sum(k.split(".", 1)[0] in f.checkpoint_modules for k in keys), i) for i, f in enumerate(families())]
    count, best = max(counts, default=(0, -1))
    return families()[best] if count * 2 > len(keys) else None


def _listed(keys: Sequence[str]) -> str:
    return ", ".join(keys[:LISTED_KEYS]) + (f", ... ({len(keys)} in all)" if len(keys) > LISTED_KEYS else "")


def check_loaded_keys(model: nn.Module, missing: Sequence[str], unexpected: Sequence[str]) -> None:
    """Raise a :class:`CheckpointError` if weights just loaded into ``model`` left some of its
    parameters unset (missing, or skipped for their shape) or held entries it does not have;
    the message names the family the weights belong to when it is another one."""
    if not missing and not unexpected:
        return
    family = get_family(type(model).__name__)
    owner = family_of_keys(unexpected)
    logger.info("Checkpoint keys missing from it: %s\nCheckpoint keys the model does not have: %s", missing, unexpected)
    if owner is not None and owner is not family:
        advice = (f"they are {owner.title} weights: use a {owner.title} config (MODEL.META_ARCHITECTURE "
                  f"{owner.name}), or {family.title} weights")
    else:
        advice = "check that the config builds the checkpoint's model (CLIP model, widths, number of classes)"
    lines = [f"The weights do not fit this {family.title} model: {advice}."]
    if missing:
        lines.append(f"  {len(missing)} of the model's parameters are not in them (or differ in shape): "
                     f"{_listed(list(missing))}")
    if unexpected:
        lines.append(f"  {len(unexpected)} of their entries are not in the model: {_listed(list(unexpected))}")
    raise CheckpointError("\n".join(lines))


class Checkpointer(DetectionCheckpointer):
    """detectron2's checkpointer; a checkpoint file that is absent or cannot be read stops with
    its name and what to do."""

    def load(self, path: str, *args, **kwargs):
        if path and "://" not in path and not os.path.isfile(path):
            raise CheckpointError(f"MODEL.WEIGHTS {path}: no such file")
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str):
        try:
            return super()._load_file(filename)
        # What torch.load raises for a truncated zip, a file cut in its pickle, or other bytes.
        except (RuntimeError, EOFError, ValueError, OSError, IndexError, pickle.UnpicklingError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(
                f"{filename} cannot be read as a checkpoint ({first}): it is truncated or not a PyTorch "
                "file. Download or copy it again; for the last checkpoint of a killed run, resume from an "
                "earlier one (write its file name into OUTPUT_DIR/last_checkpoint)") from None


def check_weights_given(cfg: CfgNode) -> None:
    """Inference needs trained weights unless the config means a random model: with MODEL.WEIGHTS
    empty and the family's pretrained (CLIP) weights set, the model would pair pretrained CLIP
    weights with untrained layers, so this raises; with every pretrained key empty a randomly
    initialised model is meant, and a warning says so."""
    if cfg.MODEL.WEIGHTS:
        return
    family = get_family(cfg)
    pretrained = [key for key in family.pretrained_keys if config_value(cfg, key)]
    if pretrained:
        empty = " and ".join(f'{key} ""' for key in pretrained)
        raise CheckpointError(
            f"MODEL.WEIGHTS is empty: {family.title} would run untrained layers on pretrained CLIP weights "
            f"({', '.join(pretrained)}). Give the trained weights (MODEL.WEIGHTS path/to/model_final.pth), or "
            f"for a random model on purpose set {empty}")
    logger.warning("MODEL.WEIGHTS is empty: a randomly initialised %s model (its config asks for no pretrained "
                   "weights)", family.title)
