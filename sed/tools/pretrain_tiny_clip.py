"""Pretrain a random-init CLIP for SED's embedded default, as CLIP's pretraining would: spread
its text tower's prompt embeddings apart (``sed/clip/spread.py``), then align its image
tower's dense embedding with the classes' names on the training images (``sed/clip/align.py``),
checking both.

    python tools/pretrain_tiny_clip.py --config-file configs/synthetic_tiny.yaml \\
        --output output/synthetic_tiny/tiny_clip_pretrained.pt [--seed 0]

(also ``python -m sed.tools.pretrain_tiny_clip``). Builds the config's CLIP
(MODEL.ENC.CLIP_MODEL_NAME) with random weights drawn from --seed and:

1. trains its text tower to spread apart the prompts of the training vocabulary (every template
   of MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES with every name of TRAIN_CLASS_JSON), and checks
   that no two classes' embeddings keep a cosine above --max-class-cosine;
2. trains its image tower on the first dataset of DATASETS.TRAIN, images resized as SED's
   inference resizes them, so that every pixel's dense embedding is nearest to its own
   class's embedding: --image-steps steps, then as many more blocks of them as it takes for
   every class to reach --min-accuracy of its pixels (at most --max-image-steps in all).

Writes the whole open_clip state dict to --output, for MODEL.ENC.CLIP_PRETRAINED_WEIGHTS, and
prints the class cosine and each class's zero-shot pixel accuracy before and after. Runs on
one thread: the same arguments write the same file on one machine (another CPU orders its
floating-point sums differently). Exits with status 1, writing nothing, when a check fails.
"""
import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from PIL import Image

from sed.clip import PROMPT_ENSEMBLES, PROMPT_TEMPLATES, ClassEmbeddingCache, resolve_model_name
from sed.clip.align import align_image_tower, class_accuracy
from sed.clip.spread import spread_text_tower
from sed.predictor import load_config
from sed.vocabulary import load_class_names


def class_embeddings(clip_model, model_name: str, templates, names) -> torch.Tensor:
    """(T, C) template-averaged class embeddings of ``names``, normalised."""
    cache = ClassEmbeddingCache(model_name=model_name, templates=templates, cache_dir="")
    return F.normalize(cache.compute(clip_model, names).mean(dim=1), dim=-1)


def largest_class_cosine(text: torch.Tensor) -> float:
    """Largest cosine between two rows of ``text`` (T, C), normalised."""
    cosines = text @ text.T
    return float(cosines[~torch.eye(len(text), dtype=torch.bool)].max())


def training_images(model, dataset: str):
    """(N, 3, S, S) images of ``dataset`` as ``model`` feeds its image tower at inference, and
    (N, H, W) their labels."""
    if dataset not in DatasetCatalog.list():
        raise SystemExit(f"error: the dataset {dataset!r} (DATASETS.TRAIN) is not registered; for the embedded "
                         "default, run `python datasets/prepare_synthetic.py` first")
    images, labels = [], []
    with torch.no_grad():
        for record in DatasetCatalog.get(dataset):
            image = torch.as_tensor(read_image(record["file_name"], "RGB").transpose(2, 0, 1).copy())
            images.append(model.preprocess([{"image": image.float()}]))
            labels.append(torch.as_tensor(np.asarray(Image.open(record["sem_seg_file_name"]), dtype=np.int64)))
    return torch.cat(images).contiguous(), torch.stack(labels)


def accuracy_line(names: Sequence[str], before: torch.Tensor, after: torch.Tensor) -> str:
    return ", ".join(f"{n} {b:.2f} -> {a:.2f}" for n, b, a in zip(names, before.tolist(), after.tolist()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="an SED config")
    parser.add_argument("--output", required=True, help="where to write the CLIP state dict (.pt)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random CLIP weights and of the batches")
    parser.add_argument("--text-steps", type=int, default=150, help="text-tower training steps")
    parser.add_argument("--text-lr", type=float, default=3e-3, help="text tower's Adam learning rate")
    parser.add_argument("--max-class-cosine", type=float, default=0.5,
                        help="largest cosine allowed between two classes' embeddings after spreading")
    parser.add_argument("--image-steps", type=int, default=150,
                        help="image-tower training steps between two accuracy checks")
    parser.add_argument("--max-image-steps", type=int, default=600, help="image-tower training steps at most")
    parser.add_argument("--image-lr", type=float, default=1e-3, help="image tower's AdamW learning rate")
    parser.add_argument("--batch-size", type=int, default=8, help="images per image-tower step")
    parser.add_argument("--min-accuracy", type=float, default=0.85,
                        help="share of its training pixels every class must have nearest to its own name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(args.config_file)
    head = cfg.MODEL.SEM_SEG_HEAD
    templates = PROMPT_TEMPLATES[head.PROMPT_TEMPLATES]
    names = load_class_names(head.TRAIN_CLASS_JSON)
    model_name = resolve_model_name(cfg.MODEL.ENC.CLIP_MODEL_NAME)
    # One thread: the same file on one machine (multi-threaded reductions in the backward pass
    # sum in an order that varies between runs).
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = build_model(cfg).eval()
    # SED freezes the text tower; here both towers train.
    clip_model = model.encoder.clip.requires_grad_(True)

    before_cosine = largest_class_cosine(class_embeddings(clip_model, model_name, templates, names))
    synonyms = [s for name in names for s in PROMPT_ENSEMBLES["per_template"].split(name)]
    prompts = [[template.format(name) for name in synonyms] for template in templates]
    spread_text_tower(clip_model, model_name, prompts, steps=args.text_steps, lr=args.text_lr)
    text = class_embeddings(clip_model, model_name, templates, names).detach()
    after_cosine = largest_class_cosine(text)
    print(f"Text tower: {len(prompts) * len(synonyms)} prompts, {args.text_steps} steps; largest cosine between "
          f"two classes {before_cosine:.3f} -> {after_cosine:.3f}")
    if after_cosine > args.max_class_cosine:
        print(f"error: two classes' embeddings keep a cosine of {after_cosine:.3f} (> --max-class-cosine "
              f"{args.max_class_cosine}); raise --text-steps. Nothing written.", file=sys.stderr)
        return 1

    images, labels = training_images(model, cfg.DATASETS.TRAIN[0])
    encode = lambda x: model.encoder(x)["clip_vis_dense"]  # noqa: E731
    accuracy_before = class_accuracy(encode, images, labels, text, args.batch_size)
    visual = [p for n, p in clip_model.named_parameters() if n.startswith("visual.")]
    generator = torch.Generator().manual_seed(args.seed)
    steps = 0
    # A schedule that does not end before every class is found: blocks of --image-steps until
    # each class's pixels are nearest to its name, or --max-image-steps.
    while True:
        block = min(args.image_steps, args.max_image_steps - steps)
        align_image_tower(encode, visual, images, labels, text, steps=block, lr=args.image_lr,
                          batch_size=args.batch_size, logit_scale=float(clip_model.logit_scale.detach().exp()),
                          ignore_value=head.IGNORE_VALUE, generator=generator)
        steps += block
        accuracy = class_accuracy(encode, images, labels, text, args.batch_size)
        if steps >= args.max_image_steps or bool((accuracy >= args.min_accuracy).all()):
            break
    print(f"Image tower: {len(images)} images, {steps} steps; pixels nearest to their class's name: "
          f"{accuracy_line(names, accuracy_before, accuracy)}")
    short = [n for n, a in zip(names, accuracy.tolist()) if not a >= args.min_accuracy]
    if short:
        print(f"error: {', '.join(short)} below --min-accuracy {args.min_accuracy} after {steps} steps; raise "
              "--max-image-steps. Nothing written.", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = f"{args.output}.{os.getpid()}.tmp"
    torch.save(clip_model.state_dict(), tmp)
    os.replace(tmp, args.output)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
