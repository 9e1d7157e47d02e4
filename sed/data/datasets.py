"""Registration of every dataset, semantic and panoptic, from one table.

Datasets live under ``$DETECTRON2_DATASETS`` (default ``./datasets``). Registering reads
nothing from disk: a dataset that is missing fails when it is first used, naming the missing
folder and the command that prepares it. Names are those of the models' authors (SED's
benchmarks, EOV-Seg's ``openvocab_*``), so their configs and commands work unchanged; EOV-Seg's
semantic benchmarks read the same files as SED's, with EOV-Seg's vocabularies.
"""
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES, COCO_CATEGORIES

from ..resources import vocabulary_path
from ..vocabulary import Vocabulary, load_vocabulary


@dataclass(frozen=True)
class SemSegDataset:
    """One split: images and label maps (train ids) matched by file stem."""

    name: str
    image_dir: str
    label_dir: str
    vocabulary: str
    prepare: str
    image_ext: str = "jpg"
    label_ext: str = "png"
    ignore_label: int = 255
    # Predicted indices >= this are merged into it before scoring (PAS-20b background).
    background_from: int = -1
    evaluator_type = "sem_seg"

    @property
    def required_paths(self) -> Tuple[str, ...]:
        return (self.image_dir, self.label_dir)


@dataclass(frozen=True)
class PanopticDataset:
    """One split in COCO's panoptic format: images, segment-id PNGs (id = R + 256 G + 65536 B)
    with a JSON of their segments, semantic label maps (train ids) and optionally a COCO
    instance JSON (mask AP)."""

    name: str
    image_dir: str
    panoptic_dir: str
    panoptic_json: str
    sem_seg_dir: str
    vocabulary: str
    prepare: str
    # Dataset category id of each class (the class index is its position).
    category_ids: Tuple[int, ...]
    evaluator_type: str
    instance_json: str = ""
    # How images and semantic maps are named (a key of PANOPTIC_LAYOUTS).
    layout: str = "coco"
    image_ext: str = "jpg"
    ignore_label: int = 255

    @property
    def required_paths(self) -> Tuple[str, ...]:
        return (self.image_dir, self.panoptic_dir, self.panoptic_json, self.sem_seg_dir)


COCO_IDS = tuple(c["id"] for c in COCO_CATEGORIES)
CITYSCAPES_IDS = tuple(c["id"] for c in sorted(CITYSCAPES_CATEGORIES, key=lambda c: c["trainId"]))
ADE150_IDS = tuple(range(150))
PREPARE_COCO = "python datasets/prepare_coco_panoptic.py"
PREPARE_ADE = "python datasets/prepare_ade20k_150.py && python datasets/prepare_ade20k_panoptic.py"

DATASETS: List = [
    SemSegDataset("coco_2017_train_stuff_all_sem_seg", "coco-stuff/images/train2017",
                  "coco-stuff/annotations_detectron2/train2017", "coco.json",
                  "python datasets/prepare_coco_stuff.py"),
    SemSegDataset("coco_2017_test_stuff_all_sem_seg", "coco-stuff/images/val2017",
                  "coco-stuff/annotations_detectron2/val2017", "coco.json",
                  "python datasets/prepare_coco_stuff.py"),
    SemSegDataset("ade20k_150_test_sem_seg", "ADEChallengeData2016/images/validation",
                  "ADEChallengeData2016/annotations_detectron2/validation", "ade150.json",
                  "python datasets/prepare_ade20k_150.py"),
    SemSegDataset("ade20k_full_sem_seg_freq_val_all", "ADE20K_2021_17_01/images_detectron2/validation",
                  "ADE20K_2021_17_01/annotations_detectron2/validation", "ade847.json",
                  "python datasets/prepare_ade20k_847.py", label_ext="tif", ignore_label=65535),
    SemSegDataset("context_59_test_sem_seg", "VOCdevkit/VOC2010/JPEGImages",
                  "VOCdevkit/VOC2010/annotations_detectron2/pc59_val", "pc59.json",
                  "python datasets/prepare_pascal_context_59.py"),
    SemSegDataset("context_459_test_sem_seg", "VOCdevkit/VOC2010/JPEGImages",
                  "VOCdevkit/VOC2010/annotations_detectron2/pc459_val", "pc459.json",
                  "python datasets/prepare_pascal_context_459.py", label_ext="tif", ignore_label=459),
    SemSegDataset("voc_2012_test_sem_seg", "VOCdevkit/VOC2012/JPEGImages",
                  "VOCdevkit/VOC2012/annotations_detectron2/val", "voc20.json",
                  "python datasets/prepare_voc.py"),
    SemSegDataset("voc_2012_test_background_sem_seg", "VOCdevkit/VOC2012/JPEGImages",
                  "VOCdevkit/VOC2012/annotations_detectron2_bg/val", "voc20b.json",
                  "python datasets/prepare_voc.py", background_from=20),
    # The embedded default: generated coloured shapes (see sed/data/synthetic.py).
    SemSegDataset("sed_synthetic_train", "sed_synthetic/images/train",
                  "sed_synthetic/annotations_detectron2/train", "synthetic.json",
                  "python datasets/prepare_synthetic.py", image_ext="png"),
    SemSegDataset("sed_synthetic_val", "sed_synthetic/images/val",
                  "sed_synthetic/annotations_detectron2/val", "synthetic.json",
                  "python datasets/prepare_synthetic.py", image_ext="png"),
    # EOV-Seg's semantic benchmarks: SED's files, FC-CLIP's prompt-engineered vocabularies.
    SemSegDataset("openvocab_ade20k_sem_seg_val", "ADEChallengeData2016/images/validation",
                  "ADEChallengeData2016/annotations_detectron2/validation", "eov_seg/ade20k_150.json",
                  "python datasets/prepare_ade20k_150.py"),
    SemSegDataset("openvocab_ade20k_full_sem_seg_val", "ADE20K_2021_17_01/images_detectron2/validation",
                  "ADE20K_2021_17_01/annotations_detectron2/validation", "eov_seg/ade20k_847.json",
                  "python datasets/prepare_ade20k_847.py", label_ext="tif", ignore_label=65535),
    SemSegDataset("openvocab_pascal_ctx59_sem_seg_val", "VOCdevkit/VOC2010/JPEGImages",
                  "VOCdevkit/VOC2010/annotations_detectron2/pc59_val", "eov_seg/pascal_ctx_59.json",
                  "python datasets/prepare_pascal_context_59.py"),
    SemSegDataset("openvocab_pascal_ctx459_sem_seg_val", "VOCdevkit/VOC2010/JPEGImages",
                  "VOCdevkit/VOC2010/annotations_detectron2/pc459_val", "eov_seg/pascal_ctx_459.json",
                  "python datasets/prepare_pascal_context_459.py", label_ext="tif", ignore_label=459),
    SemSegDataset("openvocab_pascal20_sem_seg_val", "VOCdevkit/VOC2012/JPEGImages",
                  "VOCdevkit/VOC2012/annotations_detectron2/val", "eov_seg/pascal_voc_20.json",
                  "python datasets/prepare_voc.py"),
    SemSegDataset("openvocab_coco_2017_test_stuff_sem_seg", "coco-stuff/images/val2017",
                  "coco-stuff/annotations_detectron2/val2017", "eov_seg/coco_stuff_171.json",
                  "python datasets/prepare_coco_stuff.py"),
    # EOV-Seg's panoptic sets.
    *[PanopticDataset(f"openvocab_coco_2017_{split}_panoptic_with_sem_seg", f"coco/{split}2017",
                      f"coco/panoptic_{split}2017", f"coco/annotations/panoptic_{split}2017.json",
                      f"coco/panoptic_semseg_{split}2017", "eov_seg/coco_panoptic_133.json", PREPARE_COCO,
                      COCO_IDS, "coco_panoptic_seg", instance_json=f"coco/annotations/instances_{split}2017.json")
      for split in ("train", "val")],
    *[PanopticDataset(f"openvocab_ade20k_panoptic_{split}", f"ADEChallengeData2016/images/{folder}",
                      f"ADEChallengeData2016/ade20k_panoptic_{split}", f"ADEChallengeData2016/ade20k_panoptic_{split}.json",
                      f"ADEChallengeData2016/annotations_detectron2/{folder}", "eov_seg/ade20k_150.json", PREPARE_ADE,
                      ADE150_IDS, "ade20k_panoptic_seg", instance_json=f"ADEChallengeData2016/ade20k_instance_{split}.json")
      for split, folder in (("train", "training"), ("val", "validation"))],
    *[PanopticDataset(f"openvocab_cityscapes_fine_panoptic_{split}", f"cityscapes/leftImg8bit/{split}",
                      f"cityscapes/gtFine/cityscapes_panoptic_{split}", f"cityscapes/gtFine/cityscapes_panoptic_{split}.json",
                      f"cityscapes/gtFine/{split}", "eov_seg/cityscapes_19.json",
                      "python datasets/prepare_cityscapes_panoptic.py", CITYSCAPES_IDS, "cityscapes_panoptic_seg",
                      layout="cityscapes", image_ext="png")
      for split in ("train", "val")],
    # The panoptic embedded default: generated shapes on sky and grass (see sed/data/synthetic.py).
    *[PanopticDataset(f"eov_synthetic_panoptic_{split}", f"eov_synthetic/images/{split}",
                      f"eov_synthetic/panoptic_{split}", f"eov_synthetic/panoptic_{split}.json",
                      f"eov_synthetic/panoptic_semseg_{split}", "eov_synthetic.json",
                      "python datasets/prepare_synthetic.py", (1, 2, 3, 4, 5), "coco_panoptic_seg", image_ext="png")
      for split in ("train", "val")],
]


def dataset_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def check_on_disk(spec) -> str:
    """The dataset root, after checking that every path of ``spec`` is there."""
    root = dataset_root()
    for folder in spec.required_paths:
        path = os.path.join(root, folder)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Dataset '{spec.name}' not found: {path} does not exist. Prepare it with "
                f"`{spec.prepare}` (see datasets/README.md), or point $DETECTRON2_DATASETS "
                f"(now {root!r}) at the folder that holds it."
            )
    return root


def load_split(spec: SemSegDataset) -> List[Dict]:
    """detectron2 dataset dicts of a semantic split, read under the dataset root of the moment;
    fails clearly when its folders are missing."""
    root = check_on_disk(spec)
    return load_sem_seg(
        os.path.join(root, spec.label_dir), os.path.join(root, spec.image_dir),
        gt_ext=spec.label_ext, image_ext=spec.image_ext,
    )


def coco_layout(spec: PanopticDataset, root: str, annotation: Dict) -> Tuple[str, str]:
    """Image and semantic map of a COCO-layout entry: the panoptic PNG's stem."""
    stem = os.path.splitext(annotation["file_name"])[0]
    return (os.path.join(root, spec.image_dir, f"{stem}.{spec.image_ext}"),
            os.path.join(root, spec.sem_seg_dir, f"{stem}.png"))


def cityscapes_layout(spec: PanopticDataset, root: str, annotation: Dict) -> Tuple[str, str]:
    """Image and train-id map of a Cityscapes entry (image id ``<city>_<seq>_<frame>``)."""
    image_id = annotation["image_id"]
    city = image_id.split("_")[0]
    return (os.path.join(root, spec.image_dir, city, f"{image_id}_leftImg8bit.{spec.image_ext}"),
            os.path.join(root, spec.sem_seg_dir, city, f"{image_id}_gtFine_labelTrainIds.png"))


PANOPTIC_LAYOUTS: Dict[str, Callable[[PanopticDataset, str, Dict], Tuple[str, str]]] = {
    "coco": coco_layout,
    "cityscapes": cityscapes_layout,
}


def set_panoptic_paths(spec: PanopticDataset, root: str) -> None:
    """(Re)set the metadata paths the evaluators read, under the dataset root of the moment."""
    meta = MetadataCatalog.get(spec.name)
    paths = {
        "panoptic_root": os.path.join(root, spec.panoptic_dir),
        "panoptic_json": os.path.join(root, spec.panoptic_json),
        "image_root": os.path.join(root, spec.image_dir),
        "json_file": os.path.join(root, spec.instance_json) if spec.instance_json else "",
    }
    for key, value in paths.items():
        if key in meta.as_dict():
            delattr(meta, key)
        setattr(meta, key, value)


def load_panoptic_split(spec: PanopticDataset) -> List[Dict]:
    """detectron2 dataset dicts of a panoptic split: ``file_name``, ``image_id``,
    ``pan_seg_file_name``, ``sem_seg_file_name`` and ``segments_info`` with class indices
    (``category_id``) and ``isthing``."""
    root = check_on_disk(spec)
    set_panoptic_paths(spec, root)
    with open(os.path.join(root, spec.panoptic_json)) as f:
        annotations = json.load(f)["annotations"]
    index = {category_id: i for i, category_id in enumerate(spec.category_ids)}
    isthing = load_vocabulary(str(vocabulary_path(spec.vocabulary))).isthing
    dicts = []
    for annotation in annotations:
        image, sem_seg = PANOPTIC_LAYOUTS[spec.layout](spec, root, annotation)
        segments = [dict(s, category_id=index[s["category_id"]], isthing=isthing[index[s["category_id"]]])
                    for s in annotation["segments_info"]]
        dicts.append({
            "file_name": image, "image_id": annotation["image_id"], "sem_seg_file_name": sem_seg,
            "pan_seg_file_name": os.path.join(root, spec.panoptic_dir, annotation["file_name"]),
            "segments_info": segments,
        })
    if not dicts:
        raise FileNotFoundError(f"Dataset '{spec.name}': {spec.panoptic_json} lists no image; "
                                f"rerun `{spec.prepare}`")
    return dicts


def class_names(vocabulary: str) -> List[str]:
    return list(load_vocabulary(str(vocabulary_path(vocabulary))).names)


def load_sem_seg_label(path: str, dtype=int) -> np.ndarray:
    """Read a single-channel label map (PNG or TIFF) as an array of ``dtype``."""
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image, dtype=dtype)


def palette(num_classes: int) -> List[List[int]]:
    """Distinct RGB colours, the PASCAL VOC colour map: the bits of the class index are
    spread over the high bits of R, G and B."""
    colours = []
    for index in range(num_classes):
        rgb, c = [0, 0, 0], index
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << bit
            c >>= 3
        colours.append(rgb)
    return colours


def panoptic_metadata(vocabulary: Vocabulary, category_ids: Sequence[int]) -> Dict:
    """Metadata of a panoptic split whose class i has dataset category id ``category_ids[i]``."""
    return {
        "thing_classes": [n for n, t in zip(vocabulary.names, vocabulary.isthing) if t],
        "thing_dataset_id_to_contiguous_id": {category_ids[i]: i for i, t in enumerate(vocabulary.isthing) if t},
        "stuff_dataset_id_to_contiguous_id": {category_id: i for i, category_id in enumerate(category_ids)},
        "label_divisor": 1000,
    }


def semantic_metadata(vocabulary: Vocabulary, background_from: int = -1) -> Dict:
    """Metadata of a semantic split (class index = train id)."""
    return {
        "background_from": background_from,
        "thing_dataset_id_to_contiguous_id": {i: i for i, t in enumerate(vocabulary.isthing) if t},
    }


def set_metadata(name: str, class_names: List[str], vocabulary: str, ignore_label: int, evaluator_type: str,
                 **extra) -> None:
    """The metadata every split has: classes, colours, vocabulary file, ignore value, evaluator."""
    MetadataCatalog.get(name).set(
        stuff_classes=class_names,
        stuff_colors=palette(len(class_names)),
        vocabulary=vocabulary,
        ignore_label=ignore_label,
        evaluator_type=evaluator_type,
        **extra,
    )


def register_all() -> None:
    for spec in DATASETS:
        if spec.name in DatasetCatalog.list():
            continue
        vocabulary = load_vocabulary(str(vocabulary_path(spec.vocabulary)))
        names = list(vocabulary.names)
        if isinstance(spec, PanopticDataset):
            DatasetCatalog.register(spec.name, lambda spec=spec: load_panoptic_split(spec))
            set_panoptic_paths(spec, dataset_root())
            extra = panoptic_metadata(vocabulary, spec.category_ids)
        else:
            DatasetCatalog.register(spec.name, lambda spec=spec: load_split(spec))
            if spec.background_from >= 0:
                names = names[: spec.background_from] + ["background"]
            extra = semantic_metadata(vocabulary, spec.background_from)
        set_metadata(spec.name, names, str(vocabulary_path(spec.vocabulary)), spec.ignore_label,
                     spec.evaluator_type, **extra)


register_all()
