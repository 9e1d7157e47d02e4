"""EOV-Seg's entry in the model-family registry (:mod:`sed.family`): what the predictor, demos,
export, benchmark, evaluation and training need from it."""
from typing import Dict, List, Set

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from detectron2.structures import Instances

from ...config import add_eov_seg_config
from ...data.custom import CustomDatasetError, CustomSplit
from ...family import (PANOPTIC_COLUMNS, SEMANTIC_COLUMNS, Benchmark, BenchmarkSpec, CallOption, CompileSpec,
                       DeploySpec, ExportSpec, ModelFamily, register_family)
from ...resources import vocabulary_path
from . import deploy, export

# Benchmark vocabulary names -> their packaged files (the authors' class lists).
BENCHMARK_VOCABULARIES = {name: f"eov_seg/{file}.json" for name, file in {
    "ade150": "ade20k_150", "ade847": "ade20k_847", "pc59": "pascal_ctx_59", "pc459": "pascal_ctx_459",
    "voc20": "pascal_voc_20", "voc21": "pascal_voc_21", "coco_panoptic": "coco_panoptic_133",
    "coco": "coco_stuff_171", "cityscapes": "cityscapes_19", "mapillary": "mapillary_vistas_65",
    "lvis": "lvis_1203"}.items()}


def check_outputs(cfg) -> None:
    """Each test dataset's evaluation needs the model output it scores (the vocabularies are
    checked when the model is built)."""
    test = cfg.MODEL.EOV_SEG.TEST
    for dataset in cfg.DATASETS.TEST:
        kind = MetadataCatalog.get(dataset).get("evaluator_type", "")
        if kind == "sem_seg" and not test.SEMANTIC_ON:
            raise ValueError(f"Dataset '{dataset}' is scored by mIoU: set MODEL.EOV_SEG.TEST.SEMANTIC_ON True "
                             "(and PANOPTIC_ON / INSTANCE_ON False, as the authors evaluate it)")
        if kind.endswith("panoptic_seg") and not (test.PANOPTIC_ON or test.SEMANTIC_ON or test.INSTANCE_ON):
            raise ValueError(f"Dataset '{dataset}': every output of MODEL.EOV_SEG.TEST is off")


def custom_dataset_keys(train: List[CustomSplit], test: List[CustomSplit], explicit: Set[str]) -> Dict:
    """EOV-Seg's vocabularies follow its custom datasets; NUM_CLASSES follows the training
    vocabulary unless that is given on the command line."""
    for split in train:
        if split.kind != "panoptic":
            raise CustomDatasetError(f"EOV-Seg trains on panoptic ground truth, but {split.path()} has "
                                     f"{split.kind} labels: give a split with panoptic.json and panoptic/")
    keys = {}
    if train:
        keys["MODEL.EOV_SEG.TRAIN_CLASS_JSON"] = train[0].classes_file
        if "MODEL.EOV_SEG.TRAIN_CLASS_JSON" not in explicit:
            keys["MODEL.EOV_SEG.NUM_CLASSES"] = len(train[0].vocabulary)
    if test:
        keys["MODEL.EOV_SEG.TEST_CLASS_JSON"] = test[0].classes_file
    return keys


def train_batch(model, names: List[str], images: List[torch.Tensor], segments: int = 16):
    """Random panoptic targets over the config's training classes: per image ``segments``
    non-overlapping masks (the cells of a random 16x16 label grid, upsampled)."""
    classes = len(model.train_vocabulary)
    batch = []
    for im in images:
        grid = torch.randint(0, segments, (1, 1, 16, 16)).float()
        labels = F.interpolate(grid, size=im.shape[1:], mode="nearest")[0, 0].long()
        masks = torch.stack([labels == i for i in range(segments)])
        instances = Instances(tuple(im.shape[1:]), gt_classes=torch.randint(0, classes, (segments,)), gt_masks=masks)
        batch.append({"image": im, "instances": instances})
    return batch, classes


def example_image(seed: int, side: int) -> np.ndarray:
    """A generated (side, side, 3) uint8 RGB image: shapes on sky and grass (the panoptic
    embedded default's data)."""
    from ...data.synthetic import make_panoptic_sample  # OpenCV: not part of the minimal install

    return make_panoptic_sample(np.random.default_rng(seed), side)[0]


def published(name: str, dataset: str, vocabulary: str, panoptic: bool = False) -> Benchmark:
    """Panoptic: PQ, AP and mIoU with every output on; semantic: mIoU from the semantic output
    alone, as the authors evaluate it (datasets-panoptic.md 7.5)."""
    switches = ("PANOPTIC_ON", str(panoptic), "INSTANCE_ON", str(panoptic), "SEMANTIC_ON", "True")
    overrides = ("MODEL.EOV_SEG.TEST_CLASS_JSON", str(vocabulary_path(f"eov_seg/{vocabulary}")),
                 *[f"MODEL.EOV_SEG.TEST.{v}" if i % 2 == 0 else v for i, v in enumerate(switches)])
    return Benchmark(name, dataset, overrides, PANOPTIC_COLUMNS if panoptic else SEMANTIC_COLUMNS[:1])


FAMILY = register_family(ModelFamily(
    name="EOV_SEG",
    title="EOV-Seg",
    add_config=add_eov_seg_config,
    tasks=("panoptic", "semantic", "instance"),
    benchmark_vocabularies=BENCHMARK_VOCABULARIES,
    model_vocabulary=lambda model: model.test_vocabulary,
    set_vocabulary=lambda model, vocabulary: setattr(model, "test_vocabulary", vocabulary),
    marks_things=True,
    published=(
        published("ADE-150-panoptic", "openvocab_ade20k_panoptic_val", "ade20k_150.json", panoptic=True),
        published("A-847", "openvocab_ade20k_full_sem_seg_val", "ade20k_847.json"),
        published("PC-459", "openvocab_pascal_ctx459_sem_seg_val", "pascal_ctx_459.json"),
        published("A-150", "openvocab_ade20k_sem_seg_val", "ade20k_150.json"),
        published("PC-59", "openvocab_pascal_ctx59_sem_seg_val", "pascal_ctx_59.json"),
        published("PAS-20", "openvocab_pascal20_sem_seg_val", "pascal_voc_20.json"),
    ),
    benchmark=BenchmarkSpec(
        # The published test resize of a 4:3 image, with panoptic output.
        image_size=(640, 853),
        random_init_opts=("MODEL.OV_HEAD.CLIP_PRETRAINED_WEIGHTS", "", "MODEL.OV_HEAD.CLIP_VIT_PRETRAINED_WEIGHTS", "",
                          "MODEL.EOV_SEG.TEST.PANOPTIC_ON", "True"),
        train_crop=lambda cfg: cfg.INPUT.IMAGE_SIZE, train_batch=train_batch),
    tiny_config="configs/eov_seg/synthetic_tiny.yaml",
    tiny_opts=("INPUT.IMAGE_SIZE", "64"),
    text_cache_key="MODEL.EOV_SEG.TEXT_CACHE_DIR",
    example_image=example_image,
    call_options=(
        CallOption("MODEL.EOV_SEG.TEST.OBJECT_MASK_THRESHOLD", "object_mask_threshold",
                   "Panoptic: lowest proposal score kept", (0, 1, 0.05), minimum=0, maximum=1),
        CallOption("MODEL.EOV_SEG.TEST.OVERLAP_THRESHOLD", "overlap_threshold",
                   "Panoptic: least share of a mask a segment keeps", (0, 1, 0.05), minimum=0, maximum=1),
    ),
    # The predictor's result carries every output.
    predictor_opts=("MODEL.EOV_SEG.TEST.SEMANTIC_ON", "True", "MODEL.EOV_SEG.TEST.PANOPTIC_ON", "True",
                    "MODEL.EOV_SEG.TEST.INSTANCE_ON", "True"),
    pretrained_keys=("MODEL.OV_HEAD.CLIP_PRETRAINED_WEIGHTS", "MODEL.OV_HEAD.CLIP_VIT_PRETRAINED_WEIGHTS"),
    checkpoint_modules=("cnn_backbone", "vit_backbone", "lite_aggr", "light_weight_decoder", "void_embedding"),
    check_config=check_outputs,
    custom_dataset_keys=custom_dataset_keys,
    export=ExportSpec(
        wrap=export.EOVSegGraph, input_names=("image", "names", "name_index", "seen"),
        output_names=("class_logprobs", "mask_logits"), default_size=(640, 864),
        example_inputs=export.example_inputs, dynamic_shapes=export.dynamic_shapes, metadata=export.metadata,
        text_tower=lambda model: model.cnn_backbone.clip_model, text_cache=lambda model: model.class_embeddings),
    deploy=DeploySpec(
        resize=deploy.resize, preprocess=deploy.preprocess, vocabulary_inputs=deploy.vocabulary_inputs,
        postprocess=lambda outputs, *args, **switches: deploy.postprocess(*outputs, *args, **switches)),
    # The CLIP towers and the neck, before the text classifier: one graph each, for any padded canvas.
    compile=CompileSpec(modules=lambda model: {"cnn_backbone": model.cnn_backbone, "vit_backbone": model.vit_backbone,
                                               "lite_aggr": model.lite_aggr}, dynamic_image_size=True),
))
