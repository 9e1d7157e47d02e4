"""SED's entry in the model-family registry (:mod:`sed.family`): what the predictor, demos,
export, benchmark, evaluation and training need from it."""
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog

from ...config import add_sed_config
from ...data.custom import CustomDatasetError, CustomSplit
from ...deploy import image_to_chw
from ...family import (SEMANTIC_COLUMNS, Benchmark, BenchmarkSpec, CallOption, CompileSpec, DeploySpec, EarlyRejection,
                       ExportSpec, ModelFamily, register_family)
from ...resources import vocabulary_path
from ...vocabulary import Vocabulary, load_class_names
from . import export

# Benchmark vocabulary names -> their packaged files (SED's published class lists).
BENCHMARK_VOCABULARIES = {name: f"{name}.json" for name in ("ade150", "ade847", "pc59", "pc459", "voc20", "voc20b",
                                                             "coco")}


def check_vocabularies(cfg) -> None:
    """Each dataset's classes must match the vocabulary SED uses for it."""
    head = cfg.MODEL.SEM_SEG_HEAD
    pairs = [(d, head.TRAIN_CLASS_JSON) for d in cfg.DATASETS.TRAIN]
    pairs += [(d, head.TEST_CLASS_JSON) for d in cfg.DATASETS.TEST]
    for dataset, vocabulary in pairs:
        expected = load_class_names(MetadataCatalog.get(dataset).vocabulary)
        given = load_class_names(vocabulary)
        if len(given) != len(expected):
            raise ValueError(
                f"{vocabulary} has {len(given)} classes but dataset '{dataset}' has {len(expected)} "
                f"(its vocabulary is {MetadataCatalog.get(dataset).vocabulary})"
            )


def custom_dataset_keys(train: List[CustomSplit], test: List[CustomSplit], explicit: Set[str]) -> Dict:
    """SED's vocabularies, and the ignore value of its loss, follow its custom datasets."""
    for split in train + test:
        if split.kind != "semantic":
            raise CustomDatasetError(f"SED segments semantically, but {split.path()} has {split.kind} ground "
                                     "truth: give a split with labels/ (docs/custom_datasets.md)")
    keys = {}
    if train:
        keys["MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON"] = train[0].classes_file
        keys["MODEL.SEM_SEG_HEAD.IGNORE_VALUE"] = train[0].ignore_label
    if test:
        keys["MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON"] = test[0].classes_file
    return keys


def train_batch(model, names: List[str], images: List[torch.Tensor]) -> Tuple[List[dict], int]:
    """Random (H, W) label maps over ``names``, which become the training classes."""
    model.train_class_names = names
    return [{"image": im, "sem_seg": torch.randint(0, len(names), im.shape[1:])} for im in images], len(names)


def set_early_rejection(model, topk: Optional[int]) -> None:
    model.fast_inference, model.topk = topk is not None, topk


def example_image(seed: int, side: int) -> np.ndarray:
    """A generated (side, side, 3) uint8 RGB image of coloured shapes (the embedded default's data)."""
    from ...data.synthetic import make_sample  # OpenCV: not part of the minimal install

    return make_sample(np.random.default_rng(seed), side)[0]


def export_mismatch(metadata: dict, model) -> str:
    if metadata["fast_inference"] == model.fast_inference:
        return ""
    match = "give --fast (and its --topk)" if metadata["fast_inference"] else "drop --fast"
    return f"it was exported with TEST.FAST_INFERENCE {metadata['fast_inference']}: {match}"


def published(name: str, dataset: str, vocabulary: str) -> Benchmark:
    return Benchmark(name, dataset, ("MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", str(vocabulary_path(vocabulary)),
                                     "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1,1]"), SEMANTIC_COLUMNS)


def vocabulary_inputs(embeddings: np.ndarray, vocabulary: Vocabulary, metadata: dict) -> Dict[str, np.ndarray]:
    """The graph's ``text`` (T, P, C): the prompt embeddings as they are."""
    return {"text": np.ascontiguousarray(embeddings, dtype=np.float32)}


FAMILY = register_family(ModelFamily(
    name="SED",
    title="SED",
    add_config=add_sed_config,
    tasks=("semantic",),
    benchmark_vocabularies=BENCHMARK_VOCABULARIES,
    model_vocabulary=lambda model: Vocabulary(tuple(model.test_class_names), (False,) * len(model.test_class_names)),
    set_vocabulary=lambda model, vocabulary: setattr(model, "test_class_names", list(vocabulary.names)),
    marks_things=False,
    published=(
        published("A-847", "ade20k_full_sem_seg_freq_val_all", "ade847.json"),
        published("PC-459", "context_459_test_sem_seg", "pc459.json"),
        published("A-150", "ade20k_150_test_sem_seg", "ade150.json"),
        published("PC-59", "context_59_test_sem_seg", "pc59.json"),
        published("PAS-20", "voc_2012_test_sem_seg", "voc20.json"),
        published("PAS-20b", "voc_2012_test_background_sem_seg", "voc20b.json"),
    ),
    benchmark=BenchmarkSpec(
        image_size=(768, 768), random_init_opts=("MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", ""),
        train_crop=lambda cfg: cfg.INPUT.CROP.SIZE[0], train_batch=train_batch,
        early_rejection=EarlyRejection(
            opts=lambda on, topk: ("TEST.FAST_INFERENCE", str(on), "TEST.TOPK", str(topk)),
            set=set_early_rejection, heads=lambda model: model.decoder.rejection_heads),
        train_settings=lambda cfg: {"train_checkpoint_chunks": cfg.MODEL.SEM_SEG_HEAD.TRAIN_CHECKPOINT_CHUNKS},
        export_mismatch=export_mismatch),
    tiny_config="configs/synthetic_tiny.yaml",
    tiny_opts=("INPUT.CROP.SIZE", "(64,64)"),
    text_cache_key="MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR",
    example_image=example_image,
    call_options=(
        CallOption("TEST.FAST_INFERENCE", "fast_inference", "Fast inference (category early rejection)"),
        CallOption("TEST.TOPK", "topk", "TOPK: classes kept per pixel by early rejection", (1, 64, 1), minimum=1),
    ),
    # Every published SED evaluation pools 1x1 before class aggregation (training: 2x2).
    predictor_opts=("MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1,1]"),
    pretrained_keys=("MODEL.ENC.CLIP_PRETRAINED_WEIGHTS",),
    checkpoint_modules=("encoder", "cost_map", "decoder", "sem_seg_head"),
    check_config=check_vocabularies,
    custom_dataset_keys=custom_dataset_keys,
    export=ExportSpec(
        wrap=export.SEDGraph, input_names=("image", "text"), output_names=("probabilities",),
        default_size=(640, 640), example_inputs=export.example_inputs, dynamic_shapes=export.dynamic_shapes,
        metadata=export.metadata, text_tower=lambda model: model.encoder.clip,
        text_cache=lambda model: model.class_embeddings),
    deploy=DeploySpec(
        # The graph normalises and resizes to its CLIP input itself: only the layout changes.
        resize=lambda image, metadata: image,
        preprocess=lambda image, metadata: (image_to_chw(image), image.shape[:2]),
        vocabulary_inputs=vocabulary_inputs,
        postprocess=lambda outputs, size, output_size, isthing, metadata, threads=0, **switches:
            {"sem_seg": outputs[0]}),
    # The CLIP image tower, at its fixed square input: one static graph.
    compile=CompileSpec(modules=lambda model: {"encoder": model.encoder}, dynamic_image_size=False),
))
