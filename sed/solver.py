"""Optimizer of both recipes: AdamW, the CLIP image tower at a reduced learning rate, no
weight decay on norms (and SOLVER.WEIGHT_DECAY_EMBED on embeddings), optional clipping of the
whole model's gradient norm.
"""
import itertools
from typing import List, Type

import torch
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

# Parameter-name prefixes of each model's CLIP image towers -> the config key of their
# learning-rate multiplier (EOV-Seg's towers are frozen: the multiplier applies to nothing).
BACKBONE_MULTIPLIERS = {
    "encoder.clip.visual.": "CLIP_MULTIPLIER",
    "cnn_backbone.": "BACKBONE_MULTIPLIER",
    "vit_backbone.": "BACKBONE_MULTIPLIER",
}


def with_full_model_gradient_clipping(optim: Type[torch.optim.Optimizer], max_norm: float, norm_type: float):
    """Subclass of ``optim`` whose ``step`` first clips the norm of all gradients together."""

    class FullModelGradientClipping(optim):
        def step(self, closure=None):
            params = itertools.chain.from_iterable(group["params"] for group in self.param_groups)
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure=closure)

    return FullModelGradientClipping


def lr_factor(solver, name: str) -> float:
    for prefix, key in BACKBONE_MULTIPLIERS.items():
        if name.startswith(prefix):
            return solver[key]
    return 1.0


def with_embedding_weight_decay(groups: List[dict], model: torch.nn.Module, weight_decay: float) -> List[dict]:
    """Move the weights of ``nn.Embedding`` modules into groups of their own weight decay."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    out = []
    for group in groups:
        kept = [p for p in group["params"] if id(p) not in embeddings]
        moved = [p for p in group["params"] if id(p) in embeddings]
        out += [dict(group, params=kept)] if kept else []
        out += [dict(group, params=moved, weight_decay=weight_decay)] if moved else []
    return out


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    solver = cfg.SOLVER
    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        lr_factor_func=lambda name: lr_factor(solver, name),
    )
    params = with_embedding_weight_decay(params, model, solver.WEIGHT_DECAY_EMBED)
    optimizers = {
        "ADAMW": (torch.optim.AdamW, {}),
        "SGD": (torch.optim.SGD, {"momentum": solver.MOMENTUM}),
    }
    if solver.OPTIMIZER not in optimizers:
        raise ValueError(f"SOLVER.OPTIMIZER={solver.OPTIMIZER!r}; choose one of {sorted(optimizers)}")
    optim, kwargs = optimizers[solver.OPTIMIZER]
    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        return with_full_model_gradient_clipping(optim, clip.CLIP_VALUE, clip.NORM_TYPE)(params, solver.BASE_LR, **kwargs)
    return maybe_add_gradient_clipping(cfg, optim)(params, solver.BASE_LR, **kwargs)
