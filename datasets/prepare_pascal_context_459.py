"""PASCAL-Context-459 (val): for the ids (5,104 images) of sed/reference/pascalcontext_val.txt,
save ``LabelMap - 1`` of trainval/ID.mat as a uint16 TIFF.

Expects VOCdevkit/VOC2010/JPEGImages and VOCdevkit/VOC2010/trainval/*.mat
(trainval.tar.gz of PASCAL-Context) under $DETECTRON2_DATASETS (default ./datasets).
Writes VOCdevkit/VOC2010/annotations_detectron2/pc459_val/*.tif.

    python datasets/prepare_pascal_context_459.py [--root DIR] [--workers N]
"""
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from sed.data.prepare import parse_args, require, run_jobs, save_atomic
from sed.resources import reference_path


def convert(src: Path, dst: Path) -> None:
    label = loadmat(str(src))["LabelMap"].astype(np.int64) - 1
    save_atomic(label.astype(np.uint16), dst)


def main():
    args = parse_args(__doc__)
    base = Path(args.root) / "VOCdevkit" / "VOC2010"
    require(base / "JPEGImages", "the VOC2010 images (VOCtrainval_03-May-2010.tar)")
    src_dir = require(base / "trainval", "the trainval/*.mat label maps of PASCAL-Context (trainval.tar.gz)")
    ids = reference_path("pascalcontext_val.txt").read_text().split()
    missing = [i for i in ids if not (src_dir / f"{i}.mat").exists()]
    if missing:
        raise SystemExit(f"error: {len(missing)} of {len(ids)} val label maps are missing from {src_dir} "
                         f"(first: {missing[0]}.mat): is the download complete?")
    out = base / "annotations_detectron2" / "pc459_val"
    jobs = [(src_dir / f"{i}.mat", out / f"{i}.tif") for i in ids]
    run_jobs(jobs, convert, lambda job: [job[1]], args.workers, "PASCAL-Context-459")


if __name__ == "__main__":
    main()
