"""The model-family interface: everything the project outside a model's own folder asks of it.

Each family (a detectron2 meta-architecture and what serves it) declares one
:class:`ModelFamily` next to its code, in ``sed/modeling/<family>/family.py``, and registers it
with :func:`register_family` under its ``MODEL.META_ARCHITECTURE`` name. The predictor, the
demo outputs, export and deployment, compiled inference, the benchmark, the evaluation summary,
the GPU check, the web demo and training look the family up once (:func:`get_family`) and never compare names: a
third model is one more folder.
"""
from dataclasses import dataclass
from functools import reduce
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from detectron2.config import CfgNode

# The columns a published benchmark reports: (header, detectron2 task key, metric).
SEMANTIC_COLUMNS = (("mIoU", "sem_seg", "mIoU"), ("fwIoU", "sem_seg", "fwIoU"), ("mACC", "sem_seg", "mACC"),
                    ("pACC", "sem_seg", "pACC"))
PANOPTIC_COLUMNS = (("PQ", "panoptic_seg", "PQ"), ("SQ", "panoptic_seg", "SQ"), ("RQ", "panoptic_seg", "RQ"),
                    ("PQ_th", "panoptic_seg", "PQ_th"), ("PQ_st", "panoptic_seg", "PQ_st"), ("AP", "segm", "AP"),
                    ("mIoU", "sem_seg", "mIoU"))


@dataclass(frozen=True)
class CallOption:
    """An inference setting one predictor call may change (the rest of the config is fixed when
    the model is built), and its web-demo control."""

    key: str  # config key, e.g. "TEST.TOPK"
    attribute: str  # the model's attribute holding it
    label: str  # the web demo's label of its control
    # (low, high, step) of a numeric setting's slider; None: a switch (bool).
    slider: Optional[Tuple[float, float, float]] = None
    minimum: Optional[float] = None  # the least value that means something (None: no bound)
    maximum: Optional[float] = None  # the greatest

    def check(self, value, source: str) -> None:
        """Raise a ValueError naming ``source`` if ``value`` lies outside the bounds."""
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            bounds = (f"from {self.minimum} to {self.maximum}" if self.minimum is not None and self.maximum is not None
                      else f"at least {self.minimum}" if self.minimum is not None else f"at most {self.maximum}")
            raise ValueError(f"{source}: {self.key} is {value}; it takes values {bounds}")


@dataclass(frozen=True)
class Benchmark:
    """One evaluation of a family's published table (``eval.sh``)."""

    name: str  # as in the published table
    dataset: str  # registered dataset
    overrides: Tuple[str, ...]  # config KEY VALUE pairs of this evaluation
    columns: Tuple[Tuple[str, str, str], ...]  # (header, task, metric) reported


@dataclass(frozen=True)
class ExportSpec:
    """How a family's image side is exported to ONNX (:mod:`sed.export`)."""

    wrap: Callable  # model -> nn.Module whose forward is the graph
    input_names: Tuple[str, ...]
    output_names: Tuple[str, ...]
    default_size: Tuple[int, int]  # (H, W) of the example input when none is given
    example_inputs: Callable  # (model, height, width) -> graph inputs
    dynamic_shapes: Callable  # (model, dynamic image size) -> torch.export dynamic shapes
    metadata: Callable  # (model, cfg) -> JSON-able dict of what pre- and post-processing need
    text_tower: Callable  # model -> its open_clip model (text tower and tokenizer)
    text_cache: Callable  # model -> its ClassEmbeddingCache (prompts, tokenizer, ensemble)


@dataclass(frozen=True)
class DeploySpec:
    """How an exported file runs outside PyTorch (:class:`sed.deploy.ExportedModel`); every
    callable takes the file's metadata (``ExportSpec.metadata`` and more)."""

    resize: Callable  # (image (H, W, 3) uint8, metadata) -> the image at the model's input size
    preprocess: Callable  # (image, metadata) -> (graph ``image`` input, (H, W) before padding)
    vocabulary_inputs: Callable  # (embeddings, Vocabulary, metadata) -> the graph's text inputs
    # (graph outputs, (H, W) before padding, output (H, W), isthing (T,), metadata, threads,
    # **switches) -> the outputs the PyTorch model gives ("sem_seg", ...)
    postprocess: Callable


@dataclass(frozen=True)
class EarlyRejection:
    """A family's category early rejection (inference keeps only the classes some pixel ranks
    high), as the benchmark switches and measures it."""

    opts: Callable  # (on, topk) -> config KEY VALUE pairs switching it
    set: Callable  # (model, topk or None for off) -> None, on a built model
    heads: Callable  # model -> the modules whose (T', 1, h, w) outputs score the classes


@dataclass(frozen=True)
class BenchmarkSpec:
    """What ``tools/benchmark.py`` measures of a family."""

    image_size: Tuple[int, int]  # default inference input (H, W)
    random_init_opts: Tuple[str, ...]  # config KEY VALUE pairs: CLIP randomly initialised, outputs measured
    train_crop: Callable  # cfg -> the recipe's square training crop side
    train_batch: Callable  # (model, names, images) -> (random training batch, training classes)
    early_rejection: Optional[EarlyRejection] = None  # what --fast, --topk, --ranked-rejection switch
    train_settings: Callable = lambda cfg: {}  # cfg -> training settings reported with the figures
    # (file metadata, model) -> why an export does not match the model built for it, or "".
    export_mismatch: Callable = lambda metadata, model: ""


@dataclass(frozen=True)
class CompileSpec:
    """What ``TEST.COMPILE`` compiles of a family (:mod:`sed.compile`)."""

    # model -> {name: module}: the networks that see only the image (no class enters them), each
    # compiled on its own; their forwards take and return tensors, or lists and dicts of them.
    modules: Callable
    # Whether their inputs' height and width change from image to image (one graph with a
    # symbolic size) or never do (one static graph).
    dynamic_image_size: bool


@dataclass(frozen=True)
class ModelFamily:
    """Everything the rest of the project needs from one model family."""

    name: str  # MODEL.META_ARCHITECTURE (the registry key)
    title: str  # shown to users, e.g. "EOV-Seg"
    add_config: Callable[[CfgNode], None]  # adds the family's config keys with their defaults
    tasks: Tuple[str, ...]  # the demos' tasks ("semantic", "panoptic", "instance"), the default first
    # Benchmark vocabulary name (case-insensitive on input) -> packaged vocabulary file
    # (sed.resources.vocabulary_path).
    benchmark_vocabularies: Mapping[str, str]
    model_vocabulary: Callable  # model -> the Vocabulary it was built with (its config's test vocabulary)
    set_vocabulary: Callable  # (model, Vocabulary) -> None: the vocabulary of the next forward
    marks_things: bool  # whether thing/stuff flags change its output (shown as ":thing" marks)
    published: Tuple[Benchmark, ...]  # eval.sh's table, in the order it is printed
    benchmark: BenchmarkSpec
    tiny_config: str  # configs/... of a tiny random-init model for checks and dry runs
    tiny_opts: Tuple[str, ...]  # KEY VALUE pairs shrinking the tiny config's inputs to 64 pixels
    text_cache_key: str  # config key of the on-disk text-embedding cache folder
    example_image: Callable  # (seed, side) -> (side, side, 3) uint8 RGB generated example
    call_options: Tuple[CallOption, ...] = ()
    predictor_opts: Tuple[str, ...] = ()  # KEY VALUE pairs the predictor sets (every output the result carries)
    check_config: Callable = lambda cfg: None  # raises ValueError on a config it cannot train or evaluate
    # Config keys of the pretrained (CLIP) weights a model starts from: all "" means a randomly
    # initialised model is meant, so inference without MODEL.WEIGHTS is allowed (sed.checkpoint).
    pretrained_keys: Tuple[str, ...] = ()
    # Top-level module names of the family's checkpoints, to name the family of foreign weights.
    checkpoint_modules: Tuple[str, ...] = ()
    # (train splits, test splits, keys given on the command line) -> config keys following the
    # custom dataset folders (sed.data.custom.CustomSplit); raises CustomDatasetError.
    custom_dataset_keys: Callable = lambda train, test, explicit: {}
    export: Optional[ExportSpec] = None
    deploy: Optional[DeploySpec] = None
    compile: Optional[CompileSpec] = None

    def check_call_options(self, cfg: CfgNode, source: str = "the config") -> None:
        """Raise a ValueError if a call option's config value is out of its bounds."""
        for option in self.call_options:
            option.check(config_value(cfg, option.key), source)


def config_value(cfg: CfgNode, key: str):
    """The value of the dotted ``key`` (``TEST.TOPK``) in ``cfg``."""
    return reduce(getattr, key.split("."), cfg)


_FAMILIES: Dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Register ``family`` under its name; a second family of the same name replaces the first
    (a module reloaded, a test's toy family)."""
    _FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    _FAMILIES.pop(name, None)


def families() -> Tuple[ModelFamily, ...]:
    """Every registered family, in registration order."""
    return tuple(_FAMILIES.values())


def get_family(key: Union[str, CfgNode]) -> ModelFamily:
    """The family of a ``MODEL.META_ARCHITECTURE`` name or of a config; an unknown name stops
    with the registered ones."""
    name = key.MODEL.META_ARCHITECTURE if isinstance(key, CfgNode) else key
    if name not in _FAMILIES:
        raise ValueError(f"MODEL.META_ARCHITECTURE {name!r} is not a model family of this project; "
                         f"the families are {', '.join(_FAMILIES) or '(none registered)'}")
    return _FAMILIES[name]


def families_with_task(task: str) -> Sequence[ModelFamily]:
    return [f for f in _FAMILIES.values() if task in f.tasks]
