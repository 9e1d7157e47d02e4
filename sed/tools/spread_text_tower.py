"""Give a random-init CLIP a text tower whose prompt embeddings are spread apart, for SED's
embedded default (the stand-in for pretrained CLIP text weights; ``sed/clip/spread.py``).

    python tools/spread_text_tower.py --config-file configs/synthetic_tiny.yaml \\
        --output output/synthetic_tiny_clip.pt [--seed 0] [--steps 150]

(also ``python -m sed.tools.spread_text_tower``). Builds the config's CLIP
(MODEL.ENC.CLIP_MODEL_NAME) with random weights drawn from --seed, trains its text tower to
spread apart the prompts of the training vocabulary (every template of
MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES with every name of TRAIN_CLASS_JSON: the names within each
template, and all prompts together) and writes the whole open_clip state dict to --output, for
MODEL.ENC.CLIP_PRETRAINED_WEIGHTS. The same arguments write the same file. Prints the largest
cosine between two classes' embeddings before and after.
"""
import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from sed.clip import PROMPT_ENSEMBLES, PROMPT_TEMPLATES, ClassEmbeddingCache, create_clip_model, resolve_model_name
from sed.clip.spread import spread_text_tower
from sed.predictor import load_config
from sed.vocabulary import load_class_names


def largest_class_cosine(clip_model, model_name: str, templates, names) -> float:
    """Largest cosine between the template-averaged embeddings of two classes of ``names``."""
    cache = ClassEmbeddingCache(model_name=model_name, templates=templates, cache_dir="")
    classes = F.normalize(cache.compute(clip_model, names).mean(dim=1), dim=-1)  # (T, C)
    cosines = classes @ classes.T
    return float(cosines[~torch.eye(len(names), dtype=torch.bool)].max())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="an SED config")
    parser.add_argument("--output", required=True, help="where to write the CLIP state dict (.pt)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random CLIP weights")
    parser.add_argument("--steps", type=int, default=150, help="text-tower training steps")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(args.config_file)
    head = cfg.MODEL.SEM_SEG_HEAD
    templates = PROMPT_TEMPLATES[head.PROMPT_TEMPLATES]
    names = load_class_names(head.TRAIN_CLASS_JSON)
    model_name = resolve_model_name(cfg.MODEL.ENC.CLIP_MODEL_NAME)
    # One thread: the same file on any machine (multi-threaded reductions in the backward pass
    # sum in an order that varies between runs).
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    clip_model = create_clip_model(cfg.MODEL.ENC.CLIP_MODEL_NAME, "")
    synonyms = [s for name in names for s in PROMPT_ENSEMBLES["per_template"].split(name)]
    before = largest_class_cosine(clip_model, model_name, templates, names)
    prompts = [[template.format(name) for name in synonyms] for template in templates]
    losses = spread_text_tower(clip_model, model_name, prompts, steps=args.steps, lr=args.lr)
    after = largest_class_cosine(clip_model, model_name, templates, names)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = f"{args.output}.{os.getpid()}.tmp"
    torch.save(clip_model.state_dict(), tmp)
    os.replace(tmp, args.output)
    print(f"{len(templates) * len(synonyms)} prompts, {args.steps} steps: uniformity loss "
          f"{losses[0]:.3f} -> {losses[-1]:.3f}; largest cosine between two classes {before:.3f} -> {after:.3f}. "
          f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
