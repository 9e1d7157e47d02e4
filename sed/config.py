"""SED's additions to detectron2's config (`add_sed_config`)."""
import torch
from detectron2.config import CfgNode as CN

# Autocast types named by SOLVER.AMP.PRECISION and TEST.PRECISION.
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


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
    # Features of the CLIP image tower that guide decoder stages 1, 2, 3.
    head.GUIDANCE_FEATURES = ["res4", "res3", "res2"]

    # Category early rejection at test time: keep the classes in any pixel's top TOPK.
    cfg.TEST.FAST_INFERENCE = False
    cfg.TEST.TOPK = 8
    # Inference precision: "float32", or autocast to "bfloat16" / "float16" (faster on GPUs,
    # opt-in: outputs move beyond the float32 tolerances; README, Speed).
    cfg.TEST.PRECISION = "float32"

    # Learning-rate multiplier of the CLIP image tower.
    cfg.SOLVER.CLIP_MULTIPLIER = 0.01
    # Micro-batches per optimizer step: each holds IMS_PER_BATCH / GRAD_ACCUM_STEPS images, so
    # the effective batch stays IMS_PER_BATCH on fewer or smaller GPUs.
    cfg.SOLVER.GRAD_ACCUM_STEPS = 1
    # Autocast type when SOLVER.AMP.ENABLED: "float16" (with gradient scaling) or "bfloat16".
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Optimizer: "ADAMW" (the recipe) or "SGD".
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Mapper of the training data (a name in sed.data.mapper.MAPPER_REGISTRY).
    cfg.INPUT.DATASET_MAPPER_NAME = "SemanticSegMapper"
    # Random crops are re-drawn (up to 10 times) while one class covers more than this
    # fraction of the crop; 1.0 turns the constraint off (the recipe).
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Colour augmentation of training images (SSD photometric distortions).
    cfg.INPUT.COLOR_AUG_SSD = True
