"""COCO-Stuff-171: COCO ids in the stuffthingmaps PNGs -> train ids 0..170 (255 = ignore).

Expects, under $DETECTRON2_DATASETS (default ./datasets):
    coco-stuff/images/{train2017,val2017}/*.jpg         (COCO 2017 images)
    coco-stuff/annotations/{train2017,val2017}/*.png    (stuffthingmaps_trainval2017.zip)
Writes coco-stuff/annotations_detectron2/{train2017,val2017}/*.png.

    python datasets/prepare_coco_stuff.py [--root DIR] [--workers N]
"""
from pathlib import Path

from sed.data.prepare import lookup_table, parse_args, read_label, reference, require, run_jobs, save_atomic

TABLE = lookup_table(((c["id"], c["trainId"]) for c in reference("coco_stuff_categories.json")), 256, 255)


def convert(src: Path, dst: Path) -> None:
    save_atomic(TABLE[read_label(src)], dst)


def main():
    args = parse_args(__doc__)
    base = Path(args.root) / "coco-stuff"
    for split in ("train2017", "val2017"):
        require(base / "images" / split, f"the COCO {split} images")
        src_dir = require(base / "annotations" / split, f"the {split} folder of stuffthingmaps_trainval2017.zip")
        out = base / "annotations_detectron2" / split
        jobs = [(p, out / p.name) for p in sorted(src_dir.glob("*.png"))]
        if not jobs:
            raise SystemExit(f"error: no PNG label maps in {src_dir}: is the download complete?")
        run_jobs(jobs, convert, lambda job: [job[1]], args.workers, f"COCO-Stuff {split}")


if __name__ == "__main__":
    main()
