"""ADE20K-847 (ADE20K_2021_17_01, validation): object class of each pixel from the
segmentation PNG (R // 10 * 256 + G) -> train id 0..846 (65535 = ignore), saved as uint16
TIFF; images with a short side over 512 px are first resized to 512 (labels: nearest).

Expects ADE20K_2021_17_01/images/ADE/validation/**/NAME.jpg with NAME_seg.png beside each
image, under $DETECTRON2_DATASETS (default ./datasets). Writes
ADE20K_2021_17_01/images_detectron2/validation/NAME.jpg and
ADE20K_2021_17_01/annotations_detectron2/validation/NAME.tif.

    python datasets/prepare_ade20k_847.py [--root DIR] [--workers N]
"""
from pathlib import Path

import numpy as np
from PIL import Image

from sed.data.prepare import lookup_table, parse_args, reference, require, run_jobs, save_atomic

IGNORE = 65535
SHORT_SIDE = 512
TABLE = lookup_table(((c["id"], c["trainId"]) for c in reference("ade847_categories.json")),
                     256 * 256, IGNORE, dtype=np.uint16)


def outputs(image: Path, seg: Path, image_dir: Path, label_dir: Path):
    return [image_dir / image.name, label_dir / (image.stem + ".tif")]


def convert(image_path: Path, seg_path: Path, image_dir: Path, label_dir: Path) -> None:
    image_out, label_out = outputs(image_path, seg_path, image_dir, label_dir)
    with Image.open(seg_path) as seg:
        rgb = np.array(seg.convert("RGB"), dtype=np.int64)
    label = Image.fromarray(TABLE[rgb[..., 0] // 10 * 256 + rgb[..., 1]])
    with Image.open(image_path) as image:
        image = image.convert("RGB")
        short = min(image.size)
        if short > SHORT_SIDE:
            size = tuple(round(s * SHORT_SIDE / short) for s in image.size)
            image = image.resize(size, Image.BILINEAR)
            label = label.resize(size, Image.NEAREST)
        save_atomic(label, label_out)
        save_atomic(image, image_out)


def main():
    args = parse_args(__doc__)
    base = Path(args.root) / "ADE20K_2021_17_01"
    src_dir = require(base / "images" / "ADE" / "validation", "the validation images of ADE20K_2021_17_01")
    image_dir = base / "images_detectron2" / "validation"
    label_dir = base / "annotations_detectron2" / "validation"
    jobs = []
    for image in sorted(src_dir.rglob("*.jpg")):
        seg = image.with_name(image.stem + "_seg.png")
        if not seg.exists():
            raise SystemExit(f"error: {seg} is missing: the ADE20K_2021_17_01 download is incomplete")
        jobs.append((image, seg, image_dir, label_dir))
    if not jobs:
        raise SystemExit(f"error: no images in {src_dir}: is the download complete?")
    run_jobs(jobs, convert, lambda job: outputs(*job), args.workers, "ADE20K-847")


if __name__ == "__main__":
    main()
