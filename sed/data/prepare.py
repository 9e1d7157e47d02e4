"""Shared machinery of the ``datasets/prepare_*.py`` conversions: input checks, lookup
tables, and a resumable, multi-process, progress-reporting loop over files.
"""
import argparse
import json
import os
from contextlib import contextmanager
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Iterable, List, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..resources import reference_path
from .datasets import dataset_root

# ADE20K's split folders by split name.
ADE20K_FOLDERS = {"val": "validation", "train": "training"}


def parse_args(description: str, splits: Sequence[str] = (), default_splits: Sequence[str] = ()) -> argparse.Namespace:
    """``--root`` and ``--workers``; with ``splits``, also ``--splits`` (default ``default_splits``,
    else all), returned in the order of ``splits`` whatever the order given."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=dataset_root(), help="datasets folder (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    if splits:
        default = list(default_splits or splits)
        parser.add_argument("--splits", nargs="+", choices=splits, default=default,
                            help=f"splits to convert (default: {' '.join(default)})")
    args = parser.parse_args()
    if splits:
        args.splits = [s for s in splits if s in args.splits]
    return args


def require(path: Path, what: str) -> Path:
    """Fail with the expected location and origin of a missing input."""
    if not path.exists():
        raise SystemExit(f"error: {path} not found. Expected {what}. See datasets/README.md.")
    return path


def require_files(paths: Sequence[Path], what: str) -> None:
    """Fail, naming how many and the first, when some of the files an incomplete download
    would lack are missing."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"error: {len(missing)} of {len(paths)} {what} are missing (first: {missing[0]}): "
                         "is the download complete and fully unpacked? See datasets/README.md.")


def reference(name: str):
    """The packaged JSON reference table ``name`` (``sed/reference/<name>``), parsed."""
    return load_json(reference_path(name))


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


@contextmanager
def atomic_output(path: Path):
    """A temporary path (same folder and extension) to write ``path`` through: it is renamed to
    ``path`` once the block completes, so an interrupted run never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    yield tmp
    os.replace(tmp, path)


def save_atomic(array_or_image, path: Path) -> None:
    """Write an image atomically (see ``atomic_output``)."""
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    with atomic_output(path) as tmp:
        image.save(tmp)


def save_json_atomic(data, path: Path) -> None:
    """Write a JSON file atomically (see ``atomic_output``)."""
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f)


def load_json(path: Path):
    with open(path) as f:
        return json.load(f)


def run_jobs(jobs: Sequence[Tuple], convert: Callable, outputs: Callable[[Tuple], List[Path]],
             workers: int, desc: str, unit: str = "file") -> int:
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
        chunksize = max(1, min(8, len(todo) // (4 * workers)))  # few large jobs still spread over all workers
        with Pool(workers) as pool:
            for _ in tqdm(pool.imap_unordered(_star, [(convert, job) for job in todo], chunksize=chunksize),
                          total=len(todo), desc=desc, unit=unit):
                pass
    else:
        for job in tqdm(todo, desc=desc, unit=unit):
            convert(*job)
    return len(todo)


def _star(item):
    convert, job = item
    return convert(*job)
