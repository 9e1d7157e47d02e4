"""Cityscapes panoptic (fine annotations), with the converters of the `cityscapesscripts` package.

Per split, as its csCreateTrainIdLabelImgs and csCreatePanopticImgs do, but in several processes
and resumable:
1. train-id label maps (0..18, 255 ignore) from the polygon annotations
   (cityscapesscripts.preparation.json2labelImg, encoding "trainIds");
2. panoptic PNGs + JSON from the ``*_instanceIds.png`` maps
   (cityscapesscripts.preparation.createPanopticImgs.convert2panoptic, label ids as category ids:
   a value >= 1000 is label id * 1000 + instance, a smaller one a stuff region or, for a class
   with instances, a crowd region; classes ignored in evaluation are VOID). The converter is run
   on one city at a time, the cities' JSONs are joined in file order.

Expects, under $DETECTRON2_DATASETS (default ./datasets), gtFine_trainvaltest.zip unpacked as
    cityscapes/gtFine/{val,train}/<city>/*_gtFine_{instanceIds.png,polygons.json}
Writes cityscapes/gtFine/{val,train}/<city>/*_gtFine_labelTrainIds.png,
cityscapes/gtFine/cityscapes_panoptic_{val,train}/*_gtFine_panoptic.png and
cityscapes/gtFine/cityscapes_panoptic_{val,train}.json. The registered datasets also read the
images of leftImg8bit_trainvaltest.zip (cityscapes/leftImg8bit/{val,train}/<city>/).
Needs `pip install --no-deps cityscapesscripts==2.3.0 pyquaternion` (tools/install.sh does it).

    python datasets/prepare_cityscapes_panoptic.py [--root DIR] [--workers N] [--splits val train test]
"""
import os
import shutil
import tempfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import List, Tuple

from sed.data.prepare import (atomic_output, load_json, parse_args, require, require_files, run_jobs,
                              save_json_atomic)

try:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
    from cityscapesscripts.preparation.json2labelImg import json2labelImg
except ImportError as e:
    raise SystemExit(f"error: {e}. Install the Cityscapes converters: "
                     "pip install --no-deps cityscapesscripts==2.3.0 pyquaternion==0.9.9") from e


def convert_train_ids(polygons: Path, dst: Path) -> None:
    with atomic_output(dst) as tmp:
        json2labelImg(str(polygons), str(tmp), "trainIds")


def convert_city(split: str, city_dir: Path, png_dir: Path, part: Path) -> None:
    """Panoptic PNGs of one city, and the converter's JSON for them as ``part``. The converter
    reads every city of ``<gtFine>/<split>/``: it is given a temporary gtFine folder that links
    to this city only."""
    part.parent.mkdir(parents=True, exist_ok=True)
    png_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=part.parent) as tmp:
        gt_fine = Path(tmp)
        (gt_fine / split).mkdir()
        (gt_fine / split / city_dir.name).symlink_to(city_dir.resolve())
        with open(os.devnull, "w") as devnull, redirect_stdout(devnull):
            convert2panoptic(str(gt_fine), str(gt_fine), setNames=[split])
        name = f"cityscapes_panoptic_{split}"
        for png in (gt_fine / name).iterdir():
            os.replace(png, png_dir / png.name)
        os.replace(gt_fine / f"{name}.json", part)


def jobs_of_split(gt_fine: Path, split: str) -> Tuple[List[Tuple], List[Tuple]]:
    """Train-id jobs (one per image) and panoptic jobs (one per city), after checking that the
    split's download is complete."""
    split_dir = require(gt_fine / split, f"the {split} folder of gtFine_trainvaltest.zip")
    polygons = sorted(split_dir.glob("*/*_gtFine_polygons.json"))
    if not polygons:
        raise SystemExit(f"error: no *_gtFine_polygons.json in {split_dir}/<city>/: is the download complete?")
    require_files([p.with_name(p.name.replace("_polygons.json", "_instanceIds.png")) for p in polygons],
                  f"instanceIds maps of the annotations in {split_dir}")
    train_ids = [(p, p.with_name(p.name.replace("_polygons.json", "_labelTrainIds.png"))) for p in polygons]
    png_dir, parts = gt_fine / f"cityscapes_panoptic_{split}", parts_folder(gt_fine, split)
    panoptic = [(split, city, png_dir, parts / f"{city.name}.json") for city in sorted({p.parent for p in polygons})]
    return train_ids, panoptic


def parts_folder(gt_fine: Path, split: str) -> Path:
    """Where each city's JSON waits until the split's JSON is written."""
    return gt_fine / f".cityscapes_panoptic_{split}.parts"


def main():
    args = parse_args(__doc__, splits=("val", "train", "test"), default_splits=("val", "train"))
    gt_fine = Path(args.root) / "cityscapes" / "gtFine"
    jobs = {split: jobs_of_split(gt_fine, split) for split in args.splits}  # every check before any work
    for split, (train_ids, panoptic) in jobs.items():
        run_jobs(train_ids, convert_train_ids, lambda job: [job[1]], args.workers, f"Cityscapes {split} train ids")
        output = gt_fine / f"cityscapes_panoptic_{split}.json"
        if output.exists():
            print(f"Cityscapes panoptic {split}: already converted, skipping it")
            continue
        run_jobs(panoptic, convert_city, lambda job: [job[3]], args.workers, f"Cityscapes panoptic {split}",
                 unit="city")
        parts = [load_json(job[3]) for job in panoptic]
        save_json_atomic({"images": [image for part in parts for image in part["images"]],
                          "annotations": [a for part in parts for a in part["annotations"]],
                          "categories": parts[0]["categories"]}, output)
        shutil.rmtree(parts_folder(gt_fine, split))


if __name__ == "__main__":
    main()
