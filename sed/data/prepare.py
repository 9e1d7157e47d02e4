"""Shared machinery of the ``datasets/prepare_*.py`` conversions: input checks, lookup
tables, and a resumable, multi-process, progress-reporting loop over files.
"""
import argparse
import json
import os
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Iterable, List, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .datasets import dataset_root

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "datasets" / "reference"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=dataset_root(), help="datasets folder (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    return parser.parse_args()


def require(path: Path, what: str) -> Path:
    """Fail with the expected location and origin of a missing input."""
    if not path.exists():
        raise SystemExit(f"error: {path} not found. Expected {what}. See datasets/README.md.")
    return path


def reference(name: str):
    with open(REFERENCE_DIR / name) as f:
        return json.load(f)


def lookup_table(pairs: Iterable[Tuple[int, int]], size: int, fill: int, dtype=np.uint8) -> np.ndarray:
    """Array ``t`` of ``size`` entries with ``t[src] = dst`` for each pair, ``fill`` elsewhere."""
    table = np.full(size, fill, dtype=dtype)
    for src, dst in pairs:
        table[src] = dst
    return table


def read_label(path) -> np.ndarray:
    """Label map as stored (palette PNGs give their indices, not colours)."""
    with Image.open(path) as image:
        return np.array(image)


def save_atomic(array_or_image, path: Path) -> None:
    """Write an image so that an interrupted run never leaves a partial file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    image.save(tmp)
    os.replace(tmp, path)


def run_jobs(jobs: Sequence[Tuple], convert: Callable, outputs: Callable[[Tuple], List[Path]],
             workers: int, desc: str) -> int:
    """Run ``convert(*job)`` for every job whose outputs are not all written yet.

    Returns the number of jobs converted in this run.
    """
    todo = [job for job in jobs if not all(p.exists() for p in outputs(job))]
    skipped = len(jobs) - len(todo)
    if skipped:
        print(f"{desc}: {skipped} of {len(jobs)} already converted, skipping them")
    if not todo:
        return 0
    if workers > 1:
        with Pool(workers) as pool:
            for _ in tqdm(pool.imap_unordered(_star, [(convert, job) for job in todo], chunksize=8),
                          total=len(todo), desc=desc, unit="file"):
                pass
    else:
        for job in tqdm(todo, desc=desc, unit="file"):
            convert(*job)
    return len(todo)


def _star(item):
    convert, job = item
    return convert(*job)
