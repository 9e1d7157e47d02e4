"""COCO panoptic: semantic label maps derived from the panoptic annotations.

Every segment listed in an image's ``segments_info`` (crowd segments included) is painted with
its class index, the position of its COCO category id in detectron2's ``COCO_CATEGORIES``
(0..79 the things, 80..132 the stuff classes); every other pixel (VOID) is 255.

Expects, under $DETECTRON2_DATASETS (default ./datasets), from
panoptic_annotations_trainval2017.zip:
    coco/annotations/panoptic_{val,train}2017.json
    coco/panoptic_{val,train}2017/*.png    (unpack coco/annotations/panoptic_{val,train}2017.zip into coco/)
Writes coco/panoptic_semseg_{val,train}2017/*.png (uint8, the panoptic PNG's file name), val
first. The registered datasets also read the images (coco/{val,train}2017/) and
coco/annotations/instances_{val,train}2017.json (annotations_trainval2017.zip).

    python datasets/prepare_coco_panoptic.py [--root DIR] [--workers N] [--splits val train]
"""
from pathlib import Path
from typing import List, Tuple

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

from sed.data.datasets import COCO_IDS
from sed.data.prepare import load_json, parse_args, require, require_files, run_jobs, save_atomic

IGNORE = 255
CLASS_INDEX = {category_id: index for index, category_id in enumerate(COCO_IDS)}


def convert(src: Path, segments: List[Tuple[int, int]], dst: Path) -> None:
    """Paint each (segment id, class index) of ``segments`` from the panoptic PNG ``src``."""
    with Image.open(src) as image:
        ids = rgb2id(np.array(image.convert("RGB")))
    label = np.full(ids.shape, IGNORE, np.uint8)
    for segment_id, index in segments:
        label[ids == segment_id] = index
    save_atomic(label, dst)


def jobs_of_split(base: Path, split: str) -> List[Tuple]:
    """One job per annotated image, after checking that the split's download is complete."""
    name = f"panoptic_{split}2017"
    json_path = require(base / "annotations" / f"{name}.json",
                        f"annotations/{name}.json of panoptic_annotations_trainval2017.zip, unpacked into {base}")
    png_dir = base / name
    if not png_dir.is_dir():
        raise SystemExit(f"error: {png_dir} not found. Unpack {base / 'annotations' / name}.zip (inside "
                         f"panoptic_annotations_trainval2017.zip) into {base}. See datasets/README.md.")
    annotations = load_json(json_path)["annotations"]
    if not annotations:
        raise SystemExit(f"error: {json_path} lists no image: is the download complete?")
    require_files([png_dir / a["file_name"] for a in annotations], f"panoptic PNGs listed in {json_path.name}")
    out_dir = base / f"panoptic_semseg_{split}2017"
    jobs = []
    for annotation in annotations:
        segments = []
        for segment in annotation["segments_info"]:
            if segment["category_id"] not in CLASS_INDEX:
                raise SystemExit(f"error: {json_path}, image {annotation['image_id']}: category id "
                                 f"{segment['category_id']} is not one of COCO panoptic's 133 classes")
            segments.append((segment["id"], CLASS_INDEX[segment["category_id"]]))
        jobs.append((png_dir / annotation["file_name"], segments, out_dir / annotation["file_name"]))
    return jobs


def main():
    args = parse_args(__doc__, splits=("val", "train"))
    base = Path(args.root) / "coco"
    jobs = {split: jobs_of_split(base, split) for split in args.splits}  # every check before any work
    for split, split_jobs in jobs.items():
        run_jobs(split_jobs, convert, lambda job: [job[2]], args.workers, f"COCO panoptic {split}2017")


if __name__ == "__main__":
    main()
