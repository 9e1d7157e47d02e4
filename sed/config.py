"""The models' additions to detectron2's config: `add_sed_config`, `add_eov_seg_config`,
`add_project_config` (every registered model family's, for entry points that pick the model by
config), and `build_config`, the one way the project's entry points read a config file."""
import difflib
import re
from typing import List, Optional, Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .family import families

# Autocast types named by SOLVER.AMP.PRECISION.
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
# Inference precisions named by TEST.PRECISION -> autocast type (None: float32, no autocast).
INFERENCE_DTYPES = {"float32": None, **AMP_DTYPES}


def inference_dtype(cfg: CN) -> Optional[torch.dtype]:
    """The autocast type of ``cfg.TEST.PRECISION``; an unknown name raises."""
    if cfg.TEST.PRECISION not in INFERENCE_DTYPES:
        raise ValueError(f"TEST.PRECISION={cfg.TEST.PRECISION!r}; choose one of {sorted(INFERENCE_DTYPES)}")
    return INFERENCE_DTYPES[cfg.TEST.PRECISION]


def add_sed_config(cfg: CN) -> None:
    """Add every SED key, with the defaults of the released SED-B model, to ``cfg``."""
    cfg.MODEL.ENC = CN()
    # open_clip model name (e.g. "convnext_base_w_320") or path of an open_clip model-config
    # JSON, which is registered on the fly under its file stem.
    cfg.MODEL.ENC.CLIP_MODEL_NAME = "convnext_base_w_320"
    # open_clip pretrained tag, a local weights file, or "" for random init. Never fetched when
    # MODEL.WEIGHTS is set: a SED checkpoint holds the whole CLIP model.
    cfg.MODEL.ENC.CLIP_PRETRAINED_WEIGHTS = "laion_aesthetic_s13b_b82k"
    # Side of the square the image is resized to before the CLIP image tower (768 released).
    cfg.MODEL.ENC.IMAGE_SIZE = 768
    # CLIP's normalisation of 0..255 RGB input.
    cfg.MODEL.CLIP_PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
    cfg.MODEL.CLIP_PIXEL_STD = [68.5005327, 66.6321579, 70.3231630]
    # Training images are zero-padded to a multiple of this before the resize.
    cfg.MODEL.SIZE_DIVISIBILITY = 32

    head = cfg.MODEL.SEM_SEG_HEAD
    # JSON lists of class names (", " separates synonyms) for training and for testing.
    head.TRAIN_CLASS_JSON = "datasets/coco.json"
    head.TEST_CLASS_JSON = "datasets/coco.json"
    # Prompt templates of the text side: "imagenet" (the 80 CLIP ImageNet ones) or "single".
    head.PROMPT_TEMPLATES = "imagenet"
    # Folder of the on-disk text-embedding cache ("" disables it).
    head.TEXT_CACHE_DIR = "~/.cache/sed/text_embeddings"
    # Width of the cost embedding and of the first decoder stage's input.
    head.HIDDEN_DIMS = 128
    # Output widths of the three decoder stages.
    head.DECODER_DIMS = [64, 32, 16]
    # Widths of the encoder and cost-map guidance fused at each stage.
    head.DECODER_GUIDANCE_PROJ_DIMS = [32, 16, 8]
    # Depthwise kernel of the spatial aggregation (ConvNeXt block) of each stage.
    head.KERNEL_SIZE = [9, 9, 9]
    # Heads of the class-aggregation linear attention.
    head.NUM_HEADS = 4
    # Average-pooling window before class aggregation (2x2 to train; [1, 1] in every
    # published evaluation).
    head.POOLING_SIZES = [2, 2]
    # Class maps the decoder's per-class steps process at once: bounds memory for large
    # vocabularies without changing outputs. 0: by device (4 on CPU, where a chunk then stays
    # in cache; 128 on GPU).
    head.CLASS_CHUNK_SIZE = 0
    # Training: recompute the decoder's per-class chunks in the backward pass instead of keeping
    # their activations (activation checkpointing), and compute the loss and its gradient a
    # chunk of classes at a time. Same losses and gradients in about a third of the memory at
    # 171 classes, at about the same step time (docs/benchmarks.md, Training memory). False
    # keeps every activation.
    head.TRAIN_CHECKPOINT_CHUNKS = True
    # Features of the CLIP image tower that guide decoder stages 1, 2, 3.
    head.GUIDANCE_FEATURES = ["res4", "res3", "res2"]

    # Category early rejection at test time: keep the classes in any pixel's top TOPK.
    cfg.TEST.FAST_INFERENCE = False
    cfg.TEST.TOPK = 8

    # Learning-rate multiplier of the CLIP image tower.
    cfg.SOLVER.CLIP_MULTIPLIER = 0.01
    add_training_config(cfg)


def add_training_config(cfg: CN) -> None:
    """Keys of the project's trainer, data pipeline and inference precision, shared by every model."""
    # Inference precision: "float32", or autocast to "bfloat16" / "float16" (faster on GPUs,
    # opt-in: outputs move beyond the float32 tolerances; docs/benchmarks.md, Reduced precision).
    cfg.TEST.PRECISION = "float32"
    # Compiled inference: the networks that see only the image (each family names them) run
    # through torch.compile with inductor, built at their first image (docs/compile.md). Can pay
    # off over many images (evaluations, benchmarks), never for one: compiling takes about a
    # minute per tower on a 2-core CPU, half that from the cache below; measure first
    # (tools/benchmark.py --compile). Inference only (--eval-only, the predictor, the benchmark).
    cfg.TEST.COMPILE = False
    # torch.compile's mode ("default", "reduce-overhead" for CUDA graphs, "max-autotune",
    # "max-autotune-no-cudagraphs"); "": by device (CPU: inductor's default with frozen
    # weights; CUDA: "max-autotune-no-cudagraphs").
    cfg.TEST.COMPILE_MODE = ""
    # Folder of inductor's on-disk caches (compiled graphs, autotuning), so that the next run
    # of the same command skips code generation; "": inductor's own (TORCHINDUCTOR_CACHE_DIR,
    # else a folder under the system's temporary one).
    cfg.TEST.COMPILE_CACHE_DIR = "~/.cache/sed/inductor"
    # Evaluation that survives a kill: every PARTIAL_EVERY images, each process saves its
    # evaluators' state to OUTPUT_DIR/inference/DATASET/partial/, and the same command run
    # again resumes after the saved images with identical final metrics (GETTING_STARTED.md).
    # 0: nothing saved, nothing resumed.
    cfg.TEST.PARTIAL_EVERY = 50
    # Keep that folder when the evaluation completes (by default it is removed once the
    # results are written).
    cfg.TEST.KEEP_PARTIAL = False
    # MODEL.DEVICE "cpu": keep freed memory in the process heap for the next tensors instead of
    # returning it to the system (glibc; sed/cpu_memory.py): large activations then do not fault
    # their pages in again for every image, at the cost of a higher resident memory. False: the C
    # library's defaults.
    cfg.CPU_REUSE_MEMORY = True
    # Micro-batches per optimizer step: each holds IMS_PER_BATCH / GRAD_ACCUM_STEPS images, so
    # the effective batch stays IMS_PER_BATCH on fewer or smaller GPUs.
    cfg.SOLVER.GRAD_ACCUM_STEPS = 1
    # Autocast type when SOLVER.AMP.ENABLED: "float16" (with gradient scaling) or "bfloat16".
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Optimizer: "ADAMW" (both recipes) or "SGD".
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Weight decay of nn.Embedding parameters.
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # Mapper of the training data (a name in sed.data.mapper.MAPPERS).
    cfg.INPUT.DATASET_MAPPER_NAME = "SemanticSegMapper"
    # Random crops are re-drawn (up to 10 times) while one class covers more than this
    # fraction of the crop; 1.0 turns the constraint off (the recipe).
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Colour augmentation of training images (SSD photometric distortions).
    cfg.INPUT.COLOR_AUG_SSD = True


def add_eov_seg_config(cfg: CN) -> None:
    """Add every EOV-Seg key (the authors' names; defaults of the released ConvNeXt-L model,
    eov-seg-method.md) to ``cfg``."""
    eov = cfg.MODEL.EOV_SEG = CN()
    # Images are zero-padded (after normalisation) to a multiple of this.
    eov.SIZE_DIVISIBILITY = 32
    # Classes of the training vocabulary (T); must equal its length.
    eov.NUM_CLASSES = 133
    # Decoder stages, each with its own losses.
    eov.NUM_STAGES = 3
    # CNN CLIP features the Lite Aggregator fuses (strides 4..32).
    eov.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # Width C of the neck, the proposal kernels and the decoder.
    eov.HIDDEN_DIM = 256
    # Width A of the Lite Aggregator's fusion.
    eov.AGG_DIM = 128
    # Proposals N (learned kernels).
    eov.NUM_PROPOSALS = 100
    # Kernel of the proposal-kernel update (the released models: 1).
    eov.CONV_KERNEL_SIZE_2D = 1
    # Taps of the dynamic channel convolutions (f_atten, k_atten).
    eov.CONV_KERNEL_SIZE_1D = 3
    # Unused by the authors' code; kept so their configs merge.
    eov.NUM_CLS_FCS = 1
    # Linear-LayerNorm-ReLU groups before the mask kernels.
    eov.NUM_MASK_FCS = 1
    # Cross-entropy weight of the void class.
    eov.NO_OBJECT_WEIGHT = 0.1
    # Loss weights (classification, mask BCE, mask dice), also the matching costs' weights.
    eov.CLASS_WEIGHT = 2.0
    eov.MASK_WEIGHT = 5.0
    eov.DICE_WEIGHT = 5.0
    # Points per mask for matching and the mask losses.
    eov.TRAIN_NUM_POINTS = 112 * 112
    # Candidate points per kept point, and the share of kept points picked by uncertainty.
    eov.OVERSAMPLE_RATIO = 3.0
    eov.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Unused by the authors' code (sic); kept so their configs merge.
    eov.TEMPERATIRE = 0.1
    # Vocabulary files (JSON lists of names or {"name", "isthing"} objects); "" takes the
    # vocabulary from the metadata of DATASETS.TRAIN[0] / DATASETS.TEST[0].
    eov.TRAIN_CLASS_JSON = ""
    eov.TEST_CLASS_JSON = ""
    # Folder of the on-disk text-embedding cache ("" disables it).
    eov.TEXT_CACHE_DIR = "~/.cache/sed/text_embeddings"
    eov.TEST = CN()
    # Outputs at inference: per-class probabilities, panoptic segments, instances.
    eov.TEST.SEMANTIC_ON = False
    eov.TEST.INSTANCE_ON = False
    eov.TEST.PANOPTIC_ON = True
    # Panoptic: proposals scoring at most this are dropped.
    eov.TEST.OBJECT_MASK_THRESHOLD = 0.0
    # Panoptic: a segment keeping less than this share of its mask is dropped.
    eov.TEST.OVERLAP_THRESHOLD = 0.8
    # Semantic output from masks already resized to the output size.
    eov.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    ov = cfg.MODEL.OV_HEAD = CN()
    # CNN CLIP (features, text classifier, out-of-vocabulary branch): open_clip name or
    # model-config JSON, and its pretrained tag / weights file ("" random init). Never
    # fetched when MODEL.WEIGHTS is set: an EOV-Seg checkpoint holds both CLIP models.
    ov.CLIP_MODEL_NAME = "convnext_large_d_320"
    ov.CLIP_PRETRAINED_WEIGHTS = "laion2b_s29b_b131k_ft_soup"
    # ViT CLIP (its first block only), likewise.
    ov.CLIP_VIT_MODEL_NAME = "ViT-B-16"
    ov.CLIP_VIT_PRETRAINED_WEIGHTS = "openai"
    # Joint embedding width D of the CNN CLIP.
    ov.EMBED_DIM = 768
    # Geometric ensemble exponents of the CLIP branch for seen / unseen classes.
    ov.GEOMETRIC_ENSEMBLE_ALPHA = 0.4
    ov.GEOMETRIC_ENSEMBLE_BETA = 0.8
    # Proposals whose mask is empty at the CLIP feature size keep the in-vocabulary
    # prediction (the ResNet models).
    ov.ENSEMBLE_ON_VALID_MASK = False
    # Unused by the authors' code; kept so their configs merge.
    cfg.MODEL.CLIP_BACKBONE = CN()
    cfg.MODEL.CLIP_BACKBONE.NAME = "CLIP"

    # The authors' solver and input keys.
    # Learning-rate multiplier of backbone parameters (all frozen in the released recipe).
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Polynomial schedule (unused by the released step schedule).
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    # Batch padding of the data pipeline (-1: none; the model pads itself).
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Large-scale jitter: crop side and the range of the random scale.
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    add_training_config(cfg)


def add_project_config(cfg: CN) -> None:
    """Every registered model family's keys: entry points pick the model by
    MODEL.META_ARCHITECTURE alone."""
    for family in families():
        family.add_config(cfg)


class ConfigError(ValueError):
    """A config file or override that does not apply, said in one line."""


def config_keys(cfg: CN, prefix: str = "") -> List[str]:
    """Every leaf key of ``cfg``, dotted (``TEST.TOPK``)."""
    keys = []
    for name, value in cfg.items():
        keys += config_keys(value, f"{prefix}{name}.") if isinstance(value, CN) else [prefix + name]
    return keys


def _config_error(error: Exception, cfg: CN, source: str) -> ConfigError:
    """``error`` of yacs, said in one line: a key that does not exist names the closest ones."""
    text = str(error).strip("'\"")
    unknown = re.search(r"Non-existent (?:config )?key: ([\w.]+)", text)
    if unknown:
        key = unknown.group(1)
        close = difflib.get_close_matches(key, config_keys(cfg), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; see sed/config.py for the keys"
        return ConfigError(f"{source}: {key} is not a config key{hint}")
    mismatch = re.search(r"Type mismatch \((.*?) vs\. (.*?)\) with values \((.*?) vs\. (.*?)\) for config key: ([\w.]+)",
                         text)
    if mismatch:
        wanted, _, default, given, key = mismatch.groups()
        kind = re.sub(r"<class '(\w+)'>", r"\1", wanted)
        return ConfigError(f"{source}: {key} takes {kind} values (default {default}), not {given!r}")
    return ConfigError(f"{source}: {text}")


def build_config(config_file: str, opts: Sequence[str] = (), *, weights: str = "") -> CN:
    """The project config of ``config_file`` (unfrozen) with the overrides ``opts`` (KEY VALUE
    ...) and, if given, ``weights`` as MODEL.WEIGHTS; a CUDA device falls back to the CPU where
    CUDA is not available. A file or override that does not apply raises :class:`ConfigError`."""
    cfg = get_cfg()
    add_project_config(cfg)
    try:
        cfg.merge_from_file(config_file)
    except (AssertionError, KeyError, ValueError) as error:  # yacs reports unknown keys by assertion
        raise _config_error(error, cfg, config_file) from None
    if len(opts) % 2:
        raise ConfigError(f"the overrides {' '.join(opts)} are not KEY VALUE pairs (an odd count)")
    try:
        cfg.merge_from_list(list(opts))
    except (AssertionError, KeyError, ValueError) as error:
        raise _config_error(error, cfg, "the overrides") from None
    if weights:
        cfg.MODEL.WEIGHTS = weights
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg
