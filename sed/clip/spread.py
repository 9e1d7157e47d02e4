"""Spreading a random text tower's prompt embeddings over the sphere: the embedded default's
stand-in for pretrained CLIP text weights.

A randomly initialised text tower maps every prompt to nearly one direction (cosine up to
0.99 between the shapes' names of SED's embedded default), so a cost volume built from it
barely tells the classes apart. Training the text tower alone for a few hundred steps on the
uniformity loss of Wang & Isola (2020), log mean exp(-t ||u - v||^2) over pairs of
normalised embeddings, spreads them apart: the names within each template, and all prompts
together (so the templates stay different views of each name).
"""
from typing import List, Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .text import encode_prompts


def uniformity_loss(embeddings: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log of the mean of exp(-t ||u - v||^2) over the pairs of rows u, v of ``embeddings``
    (..., N, C), normalised; lowest when they spread evenly over the sphere. Averaged over
    the leading dimensions."""
    u = F.normalize(embeddings, dim=-1)
    pairs = torch.triu_indices(u.shape[-2], u.shape[-2], offset=1, device=u.device)
    distances = (u[..., pairs[0], :] - u[..., pairs[1], :]).pow(2).sum(-1)
    return distances.mul(-t).exp().mean(-1).log().mean()


def spread_text_tower(clip_model: nn.Module, model_name: str, prompts: Sequence[Sequence[str]], *,
                      steps: int = 150, lr: float = 3e-3) -> List[float]:
    """Train the text tower of ``clip_model`` in place (the image tower is untouched) so that
    the embeddings of ``prompts`` spread apart: within each group and all together.

    Args:
        model_name: the open_clip name, for its tokenizer.
        prompts: G groups of N prompts (a template filled with each of N names).
    Returns:
        the loss before each step.
    """
    groups, size = len(prompts), len(prompts[0])
    tokens = open_clip.get_tokenizer(model_name)([p for group in prompts for p in group])
    text = [p for n, p in clip_model.named_parameters() if not n.startswith("visual.") and n != "logit_scale"]
    optimizer = torch.optim.Adam(text, lr=lr)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            embeddings = encode_prompts(clip_model, tokens)
            loss = uniformity_loss(embeddings.view(groups, size, -1)) + uniformity_loss(embeddings)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses
