"""PASCAL VOC 2012 (val), both label sets: 0 (background) -> 255 and class c -> c - 1 for
PAS-20; background -> 20 for PAS-20b; 255 stays. Label maps left entirely 255 are skipped.

Expects VOCdevkit/VOC2012/{JPEGImages,SegmentationClassAug,ImageSets/Segmentation/val.txt}
under $DETECTRON2_DATASETS (default ./datasets). Writes
VOCdevkit/VOC2012/annotations_detectron2/val and annotations_detectron2_bg/val.

    python datasets/prepare_voc.py [--root DIR] [--workers N]
"""
from pathlib import Path


from sed.data.prepare import lookup_table, parse_args, read_label, require, run_jobs, save_atomic

PLAIN = lookup_table(((c, c - 1) for c in range(1, 21)), 256, 255)
BACKGROUND = lookup_table([(0, 20), *((c, c - 1) for c in range(1, 21))], 256, 255)


def convert(src: Path, plain_dst: Path, background_dst: Path) -> None:
    label = read_label(src)
    plain = PLAIN[label]
    if (plain == 255).all():
        return
    save_atomic(plain, plain_dst)
    save_atomic(BACKGROUND[label], background_dst)


def main():
    args = parse_args(__doc__)
    base = Path(args.root) / "VOCdevkit" / "VOC2012"
    require(base / "JPEGImages", "the VOC2012 images (VOCtrainval_11-May-2012.tar)")
    src_dir = require(base / "SegmentationClassAug", "the SegmentationClassAug label maps")
    ids = require(base / "ImageSets" / "Segmentation" / "val.txt", "the VOC2012 val list").read_text().split()
    missing = [i for i in ids if not (src_dir / f"{i}.png").exists()]
    if missing:
        raise SystemExit(f"error: {len(missing)} val label maps missing from {src_dir} (first: {missing[0]}.png)")
    jobs = [(src_dir / f"{i}.png", base / "annotations_detectron2" / "val" / f"{i}.png",
             base / "annotations_detectron2_bg" / "val" / f"{i}.png") for i in ids]
    run_jobs(jobs, convert, lambda job: list(job[1:]), args.workers, "PASCAL VOC 2012")


if __name__ == "__main__":
    main()
