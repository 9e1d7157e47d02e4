"""How much evidence each class has in an SED run, checkpoint by checkpoint: the cost volume's
contrast and the final logits on the validation images (docs/quick-start-runs.md).

    python benchmarks/quick_start/class_evidence.py --run-dir output/synthetic_tiny [--output evidence.json]

For every checkpoint ``model_*.pth`` of a run (train with a small SOLVER.CHECKPOINT_PERIOD to
see training unfold), evaluates the run's config (RUN_DIR/config.yaml) on its first test
dataset and prints, per class:

- ``contrast``: the mean cosine, averaged over the prompt templates, between the class's text
  embedding and the dense CLIP embedding of the class's own pixels, minus that of the other
  pixels (at the cost volume's resolution): the evidence the cost volume gives the decoder;
- ``logit own`` / ``logit other``: the mean final logit of the class on its own pixels and on
  the others;
- ``predicted as``: the share of the class's pixels predicted as each class.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from PIL import Image

from sed.checkpoint import Checkpointer
from sed.config import build_config


def resized(labels: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(labels[None, None].float(), size=tuple(size), mode="nearest")[0, 0].long()


@torch.no_grad()
def evidence(model, images, labels) -> list:
    """Per class: contrast, mean logits on own and other pixels, and the shares it is predicted as."""
    names = model.test_class_names
    text = model.text_embeddings(names)
    num = len(names)
    sums = {k: torch.zeros(num) for k in ("cos_own", "cos_other", "logit_own", "logit_other", "n_cost", "n")}
    confusion = torch.zeros(num, num)
    for image, label in zip(images, labels):
        features = model.encoder(model.preprocess([{"image": image}]))
        cost = model.cost_map.cost_volume(features["clip_vis_dense"], text)
        guidance = model.decoder.project_guidance([features[f] for f in model.guidance_features])
        logits = model.decoder(model.cost_map(cost), cost, guidance)[0][0]  # (T, H, W)
        cosine = cost[0].mean(1)  # (T, h, w)
        at_cost, at_logits = resized(label, cosine.shape[-2:]), resized(label, logits.shape[-2:])
        predicted = logits.argmax(0)
        for t in range(num):
            own, own_cost = at_logits == t, at_cost == t
            if own.any() and own_cost.any():
                sums["cos_own"][t] += cosine[t][own_cost].mean()
                sums["cos_other"][t] += cosine[t][~own_cost].mean()
                sums["logit_own"][t] += logits[t][own].mean()
                sums["logit_other"][t] += logits[t][~own].mean()
                sums["n"][t] += 1
                confusion[t] += torch.bincount(predicted[own], minlength=num).float()
    n = sums["n"].clamp_min(1)
    return [{"class": names[t], "contrast": float((sums["cos_own"][t] - sums["cos_other"][t]) / n[t]),
             "logit_own": float(sums["logit_own"][t] / n[t]), "logit_other": float(sums["logit_other"][t] / n[t]),
             "predicted_as": (confusion[t] / confusion[t].sum().clamp_min(1)).tolist()} for t in range(num)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="OUTPUT_DIR of an SED run")
    parser.add_argument("--output", help="write the figures as JSON")
    args = parser.parse_args()
    cfg = build_config(os.path.join(args.run_dir, "config.yaml"))
    model = build_model(cfg).eval()
    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    images = [torch.as_tensor(read_image(r["file_name"], "RGB").transpose(2, 0, 1).copy()).float() for r in records]
    labels = [torch.as_tensor(np.asarray(Image.open(r["sem_seg_file_name"]), dtype=np.int64)) for r in records]
    result = {}
    for path in sorted(glob.glob(os.path.join(args.run_dir, "model_0*.pth"))):
        Checkpointer(model).load(path)
        iteration = int(os.path.basename(path)[len("model_"):-len(".pth")]) + 1
        result[iteration] = evidence(model, images, labels)
        print(f"iteration {iteration}")
        for c in result[iteration]:
            shares = " ".join(f"{s:.2f}" for s in c["predicted_as"])
            print(f"  {c['class']:16s} contrast {c['contrast']:+.3f}  logit own {c['logit_own']:+.2f} "
                  f"other {c['logit_other']:+.2f}  predicted as [{shares}]")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
