"""Optimizer of the training recipe: AdamW, CLIP image tower at a reduced learning rate, no
weight decay on norms, optional clipping of the whole model's gradient norm.
"""
import itertools
from typing import Type

import torch
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

CLIP_IMAGE_TOWER = "encoder.clip.visual."


def with_full_model_gradient_clipping(optim: Type[torch.optim.Optimizer], max_norm: float, norm_type: float):
    """Subclass of ``optim`` whose ``step`` first clips the norm of all gradients together."""

    class FullModelGradientClipping(optim):
        def step(self, closure=None):
            params = itertools.chain.from_iterable(group["params"] for group in self.param_groups)
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure=closure)

    return FullModelGradientClipping


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    solver = cfg.SOLVER
    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        lr_factor_func=lambda name: solver.CLIP_MULTIPLIER if name.startswith(CLIP_IMAGE_TOWER) else 1.0,
    )
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
