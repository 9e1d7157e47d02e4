"""ADE20K-150 (SceneParsing): annotation value v -> v - 1, so unlabelled 0 becomes 255.

Expects ADEChallengeData2016/{images,annotations}/{validation,training} (ADEChallengeData2016.zip)
under $DETECTRON2_DATASETS (default ./datasets); writes
ADEChallengeData2016/annotations_detectron2/{validation,training}/*.png (validation only unless
--splits names train: only EOV-Seg's ADE20K panoptic train split reads those).

    python datasets/prepare_ade20k_150.py [--root DIR] [--workers N] [--splits val train]
"""
from pathlib import Path

import numpy as np

from sed.data.prepare import ADE20K_FOLDERS, parse_args, read_label, require, run_jobs, save_atomic


def convert(src: Path, dst: Path) -> None:
    save_atomic((read_label(src).astype(np.int16) - 1).astype(np.uint8), dst)


def main():
    args = parse_args(__doc__, splits=tuple(ADE20K_FOLDERS), default_splits=("val",))
    base = Path(args.root) / "ADEChallengeData2016"
    for split in args.splits:
        folder = ADE20K_FOLDERS[split]
        require(base / "images" / folder, f"the {folder} images of ADEChallengeData2016.zip")
        src_dir = require(base / "annotations" / folder, f"the {folder} annotations of ADEChallengeData2016.zip")
        jobs = [(p, base / "annotations_detectron2" / folder / p.name) for p in sorted(src_dir.glob("*.png"))]
        if not jobs:
            raise SystemExit(f"error: no PNG annotations in {src_dir}: is the download complete?")
        run_jobs(jobs, convert, lambda job: [job[1]], args.workers, f"ADE20K-150 {split}")


if __name__ == "__main__":
    main()
