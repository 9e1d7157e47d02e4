"""PASCAL-Context-59 (val): paint each segmentation of trainval_merged.json with its
category id, keep the 59 ids of sed/reference/pc59_context_ids.json (sorted: id 0 ->
255, i-th kept id -> i - 1), everything else 255.

Expects VOCdevkit/VOC2010/JPEGImages and VOCdevkit/VOC2010/trainval_merged.json under
$DETECTRON2_DATASETS (default ./datasets). Writes
VOCdevkit/VOC2010/annotations_detectron2/pc59_val/*.png.

    python datasets/prepare_pascal_context_59.py [--root DIR] [--workers N]
"""
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from sed.data.prepare import lookup_table, parse_args, reference, require, run_jobs, save_atomic

KEPT = sorted(reference("pc59_context_ids.json")["ids"])
TABLE = lookup_table(((cid, i - 1) for i, cid in enumerate(KEPT) if i > 0), 65536, 255)


def convert(height: int, width: int, segments, dst: Path) -> None:
    ids = np.zeros((height, width), dtype=np.int64)
    for category, rle in segments:
        ids[mask_utils.decode(rle).astype(bool)] = category
    save_atomic(TABLE[ids], dst)


def main():
    args = parse_args(__doc__)
    base = Path(args.root) / "VOCdevkit" / "VOC2010"
    require(base / "JPEGImages", "the VOC2010 images (VOCtrainval_03-May-2010.tar)")
    with open(require(base / "trainval_merged.json", "PASCAL-Context's trainval_merged.json")) as f:
        detail = json.load(f)
    images = {im["image_id"]: im for im in detail["images"] if im.get("phase") == "val"}
    segments = {image_id: [] for image_id in images}
    for anno in detail.get("annos_segmentation", []):
        if anno["image_id"] in segments:
            rle = dict(anno["segmentation"])
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode()
            segments[anno["image_id"]].append((anno["category_id"], rle))
    if not images:
        raise SystemExit("error: trainval_merged.json lists no val images: is it the right file?")
    out = base / "annotations_detectron2" / "pc59_val"
    jobs = [(im["height"], im["width"], segments[i], out / (Path(im["file_name"]).stem + ".png"))
            for i, im in sorted(images.items())]
    run_jobs(jobs, convert, lambda job: [job[3]], args.workers, "PASCAL-Context-59")


if __name__ == "__main__":
    main()
