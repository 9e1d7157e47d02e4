"""Your own dataset: a folder of images and labels, registered by naming it in a config and
checked before any training or evaluation.

Folder format (see docs/custom_datasets.md)::

    FOLDER/classes.json          the class list, in class order: a vocabulary file (sed/vocabulary.py)
    FOLDER/dataset.json          optional settings: {"ignore_label": 255}
    FOLDER/<split>/images/*      images (.jpg .jpeg .png .bmp .tif .tiff .webp)
    semantic ground truth:
    FOLDER/<split>/labels/*      single-channel label maps (.png .tif .tiff), class index per
                                 pixel, ignore_label where unlabelled; same stem as the image
    panoptic ground truth (COCO panoptic format):
    FOLDER/<split>/panoptic/*.png   segment ids (R + 256 G + 65536 B), same stem as the image
    FOLDER/<split>/panoptic.json    "annotations" (one per image: file_name, image_id,
                                    segments_info) and "categories", in the order of classes.json

A dataset name containing "/" in ``DATASETS.TRAIN`` / ``DATASETS.TEST`` is the path of a split
folder (``FOLDER/<split>``, relative to the working directory or to ``$DETECTRON2_DATASETS``):
``resolve_custom_datasets`` checks it, registers it as ``custom_<folder name>_<split>`` with
its metadata (classes, thing flags, colours, evaluator) and puts that name in the config.
"""
import hashlib
import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from panopticapi.utils import rgb2id

from ..vocabulary import Vocabulary, parse_vocabulary
from .datasets import dataset_root, panoptic_metadata, semantic_metadata, set_metadata

CLASSES_FILE = "classes.json"
SETTINGS_FILE = "dataset.json"
# dataset.json keys and their defaults.
DEFAULT_SETTINGS = {"ignore_label": 255}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_EXTENSIONS = (".png", ".tif", ".tiff")
# Successful checks are remembered here, keyed by the files' names, sizes and times.
CHECK_CACHE_DIR = "~/.cache/sed/dataset_checks"
# Problems listed in an error message (check_dataset.py lists them all).
MAX_LISTED_PROBLEMS = 50


class CustomDatasetError(ValueError):
    """A custom dataset folder with problems; the message lists them with their files."""


@dataclass
class SplitStats:
    """What a check of one split found."""

    kind: str = ""  # "semantic" or "panoptic"
    images: int = 0
    pixels: List[int] = field(default_factory=list)  # labelled pixels of each class
    images_with: List[int] = field(default_factory=list)  # images where each class occurs
    ignored_pixels: int = 0  # pixels of the ignore label (panoptic: of no segment)


@dataclass
class CheckReport:
    """The problems of a dataset folder (each naming its files) and the statistics of its splits."""

    folder: str
    problems: List[str] = field(default_factory=list)
    vocabulary: Optional[Vocabulary] = None
    ignore_label: int = DEFAULT_SETTINGS["ignore_label"]
    splits: Dict[str, SplitStats] = field(default_factory=dict)

    def raise_if_problems(self) -> None:
        """Raise CustomDatasetError listing the problems (the first MAX_LISTED_PROBLEMS), if any."""
        if not self.problems:
            return
        listed = "\n".join(f"  - {p}" for p in self.problems[:MAX_LISTED_PROBLEMS])
        more = len(self.problems) - MAX_LISTED_PROBLEMS
        if more > 0:
            listed += f"\n  ... and {more} more"
        raise CustomDatasetError(
            f"Custom dataset {self.folder} has {len(self.problems)} problem(s):\n{listed}\n"
            f"Fix them, then check again with: python tools/check_dataset.py {self.folder}"
        )


@dataclass(frozen=True)
class CustomSplit:
    """One split of a custom dataset folder."""

    folder: str  # the dataset folder (absolute)
    split: str
    kind: str
    vocabulary: Vocabulary
    ignore_label: int

    @property
    def name(self) -> str:
        return f"custom_{os.path.basename(self.folder)}_{self.split}"

    @property
    def classes_file(self) -> str:
        return os.path.join(self.folder, CLASSES_FILE)

    def path(self, *parts: str) -> str:
        return os.path.join(self.folder, self.split, *parts)


# --- files -------------------------------------------------------------------------------------


def files_by_stem(folder: str, extensions: Sequence[str]) -> Dict[str, List[str]]:
    """Files of ``folder`` with one of ``extensions`` (any case), grouped by stem; hidden files
    and other extensions are left out."""
    found = defaultdict(list)
    if os.path.isdir(folder):
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            stem, ext = os.path.splitext(entry.name)
            if entry.is_file() and not entry.name.startswith(".") and ext.lower() in extensions:
                found[stem].append(entry.path)
    return dict(found)


def unique_files(found: Dict[str, List[str]], problems: List[str]) -> Dict[str, str]:
    """The one file of each stem; a stem with several files is a problem."""
    for stem, paths in found.items():
        if len(paths) > 1:
            problems.append(f"duplicated name '{stem}': {', '.join(paths)}")
    return {stem: paths[0] for stem, paths in found.items() if len(paths) == 1}


def split_kind(split_dir: str) -> str:
    """The kind of ground truth of a split folder: "panoptic" (a panoptic.json), "semantic" (a
    labels/ folder), or "" (neither)."""
    if os.path.isfile(os.path.join(split_dir, "panoptic.json")):
        return "panoptic"
    return "semantic" if os.path.isdir(os.path.join(split_dir, "labels")) else ""


def split_names(folder: str) -> List[str]:
    """The splits of a dataset folder: its sub-folders holding an images/ folder."""
    return sorted(e.name for e in os.scandir(folder) if os.path.isdir(os.path.join(e.path, "images")))


def read_json(path: str, problems: List[str]):
    """The content of a JSON file, or None with a problem when it is unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{path}: unreadable JSON ({e})")
        return None


# --- checks ------------------------------------------------------------------------------------


def check_vocabulary(folder: str, problems: List[str]) -> Optional[Vocabulary]:
    """The class list of ``folder``, checked: a vocabulary file, not empty, no empty or repeated names."""
    path = os.path.join(folder, CLASSES_FILE)
    if not os.path.isfile(path):
        problems.append(f"{path} is missing: the class list, a JSON list of class names (or "
                        '{"name": ..., "isthing": ...} objects) in class order')
        return None
    entries = read_json(path, problems)
    if entries is None:
        return None
    try:
        vocabulary = parse_vocabulary(entries, source=path)
    except ValueError as e:
        problems.append(str(e))
        return None
    if not vocabulary.names:
        problems.append(f"{path}: the class list is empty")
    seen: Dict[str, int] = {}
    for index, entry in enumerate(vocabulary.names):
        names = [n.strip() for n in entry.split(",")]
        if any(not n for n in names):
            problems.append(f"{path}: class {index} ({entry!r}) has an empty name")
        for name in filter(None, names):
            if name in seen and seen[name] != index:
                problems.append(f"{path}: class name {name!r} is repeated (classes {seen[name]} and {index})")
            seen.setdefault(name, index)
    return vocabulary


def check_settings(folder: str, num_classes: int, problems: List[str]) -> int:
    """The ignore value of ``folder`` (dataset.json, else the default), checked."""
    path = os.path.join(folder, SETTINGS_FILE)
    settings = dict(DEFAULT_SETTINGS)
    if os.path.isfile(path):
        given = read_json(path, problems)
        if given is not None and not isinstance(given, dict):
            problems.append(f"{path}: expected a JSON object such as {json.dumps(DEFAULT_SETTINGS)}")
        elif given is not None:
            unknown = sorted(set(given) - set(DEFAULT_SETTINGS))
            if unknown:
                problems.append(f"{path}: unknown key(s) {unknown}; known: {sorted(DEFAULT_SETTINGS)}")
            settings.update((k, v) for k, v in given.items() if k in DEFAULT_SETTINGS)
    ignore = settings["ignore_label"]
    if not isinstance(ignore, int) or isinstance(ignore, bool) or 0 <= ignore < num_classes:
        problems.append(f"{path}: ignore_label must be a whole number outside the class indices "
                        f"0..{num_classes - 1}, got {ignore!r}")
        return DEFAULT_SETTINGS["ignore_label"]
    return ignore


def image_size(path: str, problems: List[str]) -> Optional[Tuple[int, int]]:
    """(height, width) of an image as training reads it, or None with a problem."""
    try:
        return read_image(path, format="RGB").shape[:2]
    except Exception as e:  # noqa: BLE001  (any decoding failure makes the file unusable)
        problems.append(f"{path}: unreadable image ({type(e).__name__}: {e})")
        return None


def check_label_pair(image: str, label: str, num_classes: int, ignore: int):
    """Problems of one image and its label map, and the label's per-class pixel counts."""
    problems: List[str] = []
    size = image_size(image, problems)
    try:
        values = read_image(label)
    except Exception as e:  # noqa: BLE001
        return problems + [f"{label}: unreadable label map ({type(e).__name__}: {e})"], None, 0
    if values.ndim != 2 or values.dtype.kind not in "biu":
        shape = f"{values.shape[2]} channels" if values.ndim == 3 else f"{values.dtype} values"
        return problems + [f"{label}: has {shape}; label maps must be single-channel whole numbers "
                           "(class index per pixel)"], None, 0
    if size is not None and values.shape != size:
        problems.append(f"{label}: size {values.shape[1]}x{values.shape[0]} differs from its image "
                        f"{image} ({size[1]}x{size[0]})")
    values = values.astype(np.int64).ravel()
    ignored = values == ignore
    bad = np.unique(values[~ignored & ((values < 0) | (values >= num_classes))])
    if bad.size:
        shown = ", ".join(map(str, bad[:10].tolist())) + (", ..." if bad.size > 10 else "")
        problems.append(f"{label}: value(s) {shown} outside the class list (0..{num_classes - 1}, "
                        f"ignore {ignore})")
    valid = values[~ignored & (values >= 0) & (values < num_classes)]
    return problems, np.bincount(valid, minlength=num_classes), int(ignored.sum())


def check_panoptic_pair(image: str, png: str, segments: List[Dict], index: Dict[int, int], num_classes: int):
    """Problems of one image and its panoptic PNG and segments, and per-class pixel counts."""
    problems: List[str] = []
    size = image_size(image, problems)
    try:
        ids = rgb2id(read_image(png, format="RGB").astype(np.int64))
    except Exception as e:  # noqa: BLE001
        return problems + [f"{png}: unreadable panoptic PNG ({type(e).__name__}: {e})"], None, 0
    if size is not None and ids.shape != size:
        problems.append(f"{png}: size {ids.shape[1]}x{ids.shape[0]} differs from its image "
                        f"{image} ({size[1]}x{size[0]})")
    present, areas = np.unique(ids, return_counts=True)
    area = dict(zip(present.tolist(), areas.tolist()))
    counts = np.zeros(num_classes, np.int64)
    listed = set()
    for s in segments:
        if s.get("id") in listed:
            problems.append(f"{png}: segment id {s.get('id')} is listed twice in panoptic.json")
        listed.add(s.get("id"))
        if s.get("category_id") not in index:
            problems.append(f"{png}: segment {s.get('id')} has category_id {s.get('category_id')!r}, "
                            "not in the categories of panoptic.json (outside the class list)")
        elif s.get("id") not in area:
            problems.append(f"{png}: segment {s.get('id')} of panoptic.json has no pixel in the PNG")
        else:
            counts[index[s["category_id"]]] += area[s["id"]]
    unlisted = sorted(set(area) - listed - {0})
    if unlisted:
        problems.append(f"{png}: segment id(s) {unlisted[:10]} in the PNG are not in its segments_info")
    return problems, counts, area.get(0, 0)


def check_semantic_split(split: CustomSplit, problems: List[str]) -> List[Tuple]:
    """Problems of the file pairing; the (image, label) jobs of the pixel checks."""
    images = unique_files(files_by_stem(split.path("images"), IMAGE_EXTENSIONS), problems)
    labels = unique_files(files_by_stem(split.path("labels"), LABEL_EXTENSIONS), problems)
    problems += [f"{path}: image without label (expected {split.path('labels', stem)}.png)"
                 for stem, path in images.items() if stem not in labels]
    problems += [f"{path}: label without image in {split.path('images')}"
                 for stem, path in labels.items() if stem not in images]
    num_classes = len(split.vocabulary)
    return [(check_label_pair, images[s], labels[s], num_classes, split.ignore_label)
            for s in sorted(images) if s in labels]


def panoptic_categories(split: CustomSplit, categories, problems: List[str]) -> Dict[int, int]:
    """Dataset category id -> class index: categories[i] is class i of classes.json."""
    json_path = split.path("panoptic.json")
    vocabulary = split.vocabulary
    if not isinstance(categories, list) or not all(isinstance(c, dict) and "id" in c for c in categories):
        problems.append(f"{json_path}: 'categories' must be a list of {{\"id\", \"name\", \"isthing\"}} objects")
        return {}
    if len(categories) != len(vocabulary):
        problems.append(f"{json_path}: {len(categories)} categories but {split.classes_file} has "
                        f"{len(vocabulary)} classes (category i is class i)")
    index = {}
    for i, (category, isthing) in enumerate(zip(categories, vocabulary.isthing)):
        if category["id"] in index:
            problems.append(f"{json_path}: category id {category['id']} is repeated")
        index.setdefault(category["id"], i)
        if bool(category.get("isthing", 0)) != isthing:
            problems.append(f"{json_path}: category {category['id']} ({category.get('name')!r}) has isthing "
                            f"{category.get('isthing', 0)} but class {i} ({vocabulary.names[i]!r}) of "
                            f"{split.classes_file} is {'a thing' if isthing else 'stuff'}")
    return index


def check_panoptic_split(split: CustomSplit, problems: List[str]) -> List[Tuple]:
    """Problems of panoptic.json and the file pairing; the jobs of the pixel checks."""
    json_path = split.path("panoptic.json")
    content = read_json(json_path, problems)
    if content is None:
        return []
    if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
        problems.append(f"{json_path}: expected COCO panoptic JSON with 'annotations' and 'categories'")
        return []
    index = panoptic_categories(split, content.get("categories"), problems)
    images = unique_files(files_by_stem(split.path("images"), IMAGE_EXTENSIONS), problems)
    pngs = unique_files(files_by_stem(split.path("panoptic"), (".png",)), problems)
    annotated, image_ids, jobs = set(), set(), []
    for annotation in content["annotations"]:
        if not isinstance(annotation, dict) or not {"file_name", "image_id", "segments_info"} <= set(annotation):
            problems.append(f"{json_path}: annotation {str(annotation)[:80]} lacks file_name, image_id "
                            "or segments_info")
            continue
        stem = os.path.splitext(annotation["file_name"])[0]
        if stem in annotated or annotation["image_id"] in image_ids:
            problems.append(f"{json_path}: duplicated name: more than one annotation for "
                            f"{annotation['file_name']} / image_id {annotation['image_id']!r}")
            continue
        annotated.add(stem)
        image_ids.add(annotation["image_id"])
        if stem not in pngs:
            problems.append(f"{json_path}: annotation of {annotation['file_name']} has no PNG "
                            f"{split.path('panoptic', stem)}.png")
        if stem not in images:
            problems.append(f"{json_path}: annotation of {annotation['file_name']} has no image in "
                            f"{split.path('images')}")
        if stem in pngs and stem in images:
            jobs.append((check_panoptic_pair, images[stem], pngs[stem], annotation["segments_info"], index,
                         len(split.vocabulary)))
    problems += [f"{path}: image without label (no annotation in {json_path})"
                 for stem, path in images.items() if stem not in annotated]
    problems += [f"{path}: panoptic PNG without annotation in {json_path}"
                 for stem, path in pngs.items() if stem not in annotated]
    return jobs


# How each kind of split is checked: file pairing -> per-image pixel checks.
SPLIT_CHECKS: Dict[str, Callable[[CustomSplit, List[str]], List[Tuple]]] = {
    "semantic": check_semantic_split,
    "panoptic": check_panoptic_split,
}


def run_pixel_checks(jobs: List[Tuple], stats: SplitStats, problems: List[str], workers: int) -> None:
    """Read every image and label (threads), adding their problems and pixel counts."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for found, counts, ignored in pool.map(lambda job: job[0](*job[1:]), jobs):
            problems += found
            if counts is not None:
                stats.pixels = (np.asarray(stats.pixels) + counts).tolist()
                stats.images_with = (np.asarray(stats.images_with) + (counts > 0)).tolist()
                stats.ignored_pixels += ignored


def check_dataset(folder: str, splits: Optional[Sequence[str]] = None, workers: int = 0) -> CheckReport:
    """Check a dataset folder (the given splits, else all) and return every problem found, each
    naming its files, with per-split statistics. Reads every image and label."""
    report = CheckReport(folder=os.path.abspath(folder))
    folder = report.folder
    if not os.path.isdir(folder):
        report.problems.append(f"{folder}: no such folder")
        return report
    report.vocabulary = check_vocabulary(folder, report.problems)
    num_classes = len(report.vocabulary) if report.vocabulary else 0
    report.ignore_label = check_settings(folder, num_classes, report.problems)
    splits = list(splits) if splits is not None else split_names(folder)
    if not splits:
        report.problems.append(f"{folder}: no split folder with images (expected {folder}/<split>/images/, "
                               "e.g. train/images/ and val/images/)")
    kinds = {}
    for name in splits:
        split_dir = os.path.join(folder, name)
        kinds[name] = split_kind(split_dir)
        if not os.path.isdir(os.path.join(split_dir, "images")):
            report.problems.append(f"{split_dir}/images: no such folder")
            continue
        if not files_by_stem(os.path.join(split_dir, "images"), IMAGE_EXTENSIONS):
            report.problems.append(f"{split_dir}/images: empty split, no image ({' '.join(IMAGE_EXTENSIONS)})")
            continue
        if not kinds[name]:
            report.problems.append(f"{split_dir}: no ground truth: expected labels/ (semantic) or "
                                   "panoptic.json with panoptic/ (panoptic)")
            continue
        if report.vocabulary is None:
            continue
        split = CustomSplit(folder, name, kinds[name], report.vocabulary, report.ignore_label)
        stats = report.splits[name] = SplitStats(kind=split.kind, pixels=[0] * num_classes,
                                                 images_with=[0] * num_classes)
        jobs = SPLIT_CHECKS[split.kind](split, report.problems)
        stats.images = len(jobs)
        run_pixel_checks(jobs, stats, report.problems, workers or os.cpu_count() or 1)
    if len(set(filter(None, kinds.values()))) > 1:
        report.problems.append(f"{folder}: splits mix semantic and panoptic ground truth "
                               f"({', '.join(f'{k}: {v}' for k, v in kinds.items() if v)})")
    return report


# --- registration ------------------------------------------------------------------------------


def is_custom_reference(name: str) -> bool:
    """A dataset name that is the path of a custom split folder (it contains a '/')."""
    return "/" in name


def locate_split(reference: str) -> Tuple[str, str]:
    """(dataset folder, split) of a split folder path, relative to the working directory or
    else to $DETECTRON2_DATASETS."""
    candidates = [reference] if os.path.isabs(reference) else [reference, os.path.join(dataset_root(), reference)]
    for candidate in candidates:
        path = os.path.abspath(candidate.rstrip("/"))
        if os.path.isdir(os.path.join(path, "images")):
            return os.path.dirname(path), os.path.basename(path)
        if os.path.isfile(os.path.join(path, CLASSES_FILE)):
            splits = [os.path.join(candidate, s) for s in split_names(path)]
            raise CustomDatasetError(
                f"{candidate} is a dataset folder: name one of its split folders "
                f"({', '.join(splits) or 'none found: expected <split>/images/'})")
    raise CustomDatasetError(
        f"Custom dataset split {reference!r} not found: no {' or '.join(c + '/images' for c in candidates)}. "
        "A dataset name with a '/' is the path of a split folder (FOLDER/<split> holding images/ "
        "and labels/ or panoptic.json); see docs/custom_datasets.md.")


def fingerprint(folder: str, split: str) -> str:
    """A key that changes when any file of the split (or the folder's class list / settings) does."""
    digest = hashlib.sha1(folder.encode())
    for path in (os.path.join(folder, CLASSES_FILE), os.path.join(folder, SETTINGS_FILE)):
        if os.path.isfile(path):
            digest.update(Path(path).read_bytes())
    for root, _, files in sorted(os.walk(os.path.join(folder, split))):
        for name in sorted(files):
            info = os.stat(os.path.join(root, name))
            digest.update(f"{root}/{name}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def checked_split(folder: str, split: str) -> CustomSplit:
    """The split after a check of it (and of the class list); raises CustomDatasetError listing
    every problem. A successful check is remembered (where CHECK_CACHE_DIR can be written)
    until a file changes."""
    marker = os.path.join(os.path.expanduser(CHECK_CACHE_DIR), fingerprint(folder, split) + ".json")
    if not os.path.isfile(marker):
        report = check_dataset(folder, [split])
        report.raise_if_problems()
        try:
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            with open(marker + f".{os.getpid()}.tmp", "w") as f:
                json.dump({"folder": folder, "split": split}, f)
            os.replace(marker + f".{os.getpid()}.tmp", marker)
        except OSError:  # not remembered: the next run checks again
            pass
    problems: List[str] = []
    vocabulary = check_vocabulary(folder, problems)
    ignore = check_settings(folder, len(vocabulary), problems)
    return CustomSplit(folder, split, split_kind(os.path.join(folder, split)), vocabulary, ignore)


def load_semantic(split: CustomSplit) -> List[Dict]:
    """detectron2 dicts of a semantic split: ``file_name``, ``sem_seg_file_name``."""
    images = files_by_stem(split.path("images"), IMAGE_EXTENSIONS)
    labels = files_by_stem(split.path("labels"), LABEL_EXTENSIONS)
    return [{"file_name": images[s][0], "sem_seg_file_name": labels[s][0]} for s in sorted(images)]


def load_panoptic(split: CustomSplit) -> List[Dict]:
    """detectron2 dicts of a panoptic split: ``file_name``, ``image_id``, ``pan_seg_file_name``,
    ``sem_seg_file_name`` (the same PNG: see PanopticSemanticLoader) and ``segments_info`` with
    class indices (``category_id``), ``isthing`` and ``iscrowd``."""
    with open(split.path("panoptic.json"), encoding="utf-8") as f:
        content = json.load(f)
    index = {c["id"]: i for i, c in enumerate(content["categories"])}
    images = files_by_stem(split.path("images"), IMAGE_EXTENSIONS)
    dicts = []
    for annotation in content["annotations"]:
        stem = os.path.splitext(annotation["file_name"])[0]
        png = split.path("panoptic", stem + ".png")
        segments = [dict(s, category_id=index[s["category_id"]], iscrowd=s.get("iscrowd", 0),
                         isthing=split.vocabulary.isthing[index[s["category_id"]]])
                    for s in annotation["segments_info"]]
        dicts.append({"file_name": images[stem][0], "image_id": annotation["image_id"], "pan_seg_file_name": png,
                      "sem_seg_file_name": png, "segments_info": segments})
    return dicts


class PanopticSemanticLoader:
    """Semantic ground truth of a panoptic split, made from its panoptic PNGs: each pixel gets
    its segment's class index, pixels of no segment the ignore value (the evaluator's
    ``sem_seg_loading_fn``)."""

    def __init__(self, dataset_name: str):
        self.dataset_name = dataset_name
        self._segments: Optional[Dict[str, List[Dict]]] = None

    def __call__(self, path: str, dtype=int) -> np.ndarray:
        if self._segments is None:
            self._segments = {d["pan_seg_file_name"]: d["segments_info"] for d in DatasetCatalog.get(self.dataset_name)}
        ids = rgb2id(read_image(path, format="RGB").astype(np.int64))
        labels = np.full(ids.shape, MetadataCatalog.get(self.dataset_name).ignore_label, dtype=dtype)
        for segment in self._segments[path]:
            labels[ids == segment["id"]] = segment["category_id"]
        return labels


def register_split(split: CustomSplit) -> None:
    """Register the split under ``split.name`` (replacing a split of another folder of that name)."""
    if split.name in DatasetCatalog.list():
        if MetadataCatalog.get(split.name).get("folder") == split.folder:
            return
        DatasetCatalog.remove(split.name)
        MetadataCatalog.remove(split.name)
    names = list(split.vocabulary.names)
    common = dict(folder=split.folder, split=split.split)
    if split.kind == "panoptic":
        DatasetCatalog.register(split.name, lambda: load_panoptic(split))
        with open(split.path("panoptic.json"), encoding="utf-8") as f:
            ids = [c["id"] for c in json.load(f)["categories"]]
        set_metadata(split.name, names, split.classes_file, split.ignore_label, "coco_panoptic_seg",
                     **panoptic_metadata(split.vocabulary, ids), **common,
                     panoptic_root=split.path("panoptic"), panoptic_json=split.path("panoptic.json"),
                     image_root=split.path("images"), json_file="",
                     sem_seg_loading_fn=PanopticSemanticLoader(split.name))
    else:
        DatasetCatalog.register(split.name, lambda: load_semantic(split))
        set_metadata(split.name, names, split.classes_file, split.ignore_label, "sem_seg",
                     **semantic_metadata(split.vocabulary), **common)


def resolve_custom_datasets(cfg) -> Tuple[List[CustomSplit], List[CustomSplit]]:
    """Check and register the custom split folders named in DATASETS.TRAIN / DATASETS.TEST and
    put their registered names in ``cfg`` (not frozen). Returns the custom train and test splits."""
    found = {}
    for key in ("TRAIN", "TEST"):
        names = []
        for name in cfg.DATASETS[key]:
            if is_custom_reference(name):
                split = checked_split(*locate_split(name))
                other = found.get(split.name)
                if other is not None and other.folder != split.folder:
                    raise CustomDatasetError(f"{other.folder} and {split.folder} would both be registered as "
                                             f"'{split.name}': rename one of the folders")
                found[split.name] = split
                register_split(split)
                name = split.name
            names.append(name)
        cfg.DATASETS[key] = tuple(names)
    return ([found[n] for n in cfg.DATASETS.TRAIN if n in found], [found[n] for n in cfg.DATASETS.TEST if n in found])
