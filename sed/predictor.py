"""Python API: segment images with any vocabulary, with any model family (SED, EOV-Seg).

    from sed import Predictor
    predictor = Predictor.from_config_file("configs/convnextB_768.yaml", weights="model.pth")
    result = predictor(image_rgb, ["cat", "dog, puppy", "sky"])
    result.labels        # (H, W) int64 indices into the vocabulary
    result.probabilities # (T, H, W) float32

The model (picked by the config's MODEL.META_ARCHITECTURE) is built and its weights loaded once;
a new vocabulary only computes (and caches) its text embeddings. With an EOV-Seg config the
result also carries ``panoptic`` and ``instances``; a vocabulary entry "person:thing" marks a
thing class (see :func:`parse_vocabulary_spec`).
"""
import difflib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances
from PIL import Image

from .checkpoint import Checkpointer, check_weights_given
from .compile import maybe_compile
from .config import build_config
from .cpu_memory import configure_cpu_memory
from .family import ModelFamily, config_value, families, get_family
from .resources import vocabulary_path
from .vocabulary import Vocabulary, parse_vocabulary

MARKERS = {"thing": True, "stuff": False}


@dataclass
class PanopticSegment:
    id: int  # value of the segment in ``Panoptic.ids``
    category_id: int  # index into the vocabulary
    isthing: bool
    score: float  # in [0, 1]: mean share of its class in the semantic scores of its pixels
    area: int  # pixels


@dataclass
class Panoptic:
    ids: np.ndarray  # (H, W) int32 segment ids, 0 where no segment
    segments: List[PanopticSegment]


@dataclass
class Segmentation:
    labels: np.ndarray  # (H, W) int64, index into class_names
    probabilities: torch.Tensor  # (T, H, W) float32 class scores (EOV-Seg: mask-weighted, not normalised)
    class_names: List[str]
    isthing: List[bool]  # (T,) thing flag per class
    panoptic: Optional[Panoptic] = None  # EOV-Seg only
    instances: Optional[Instances] = None  # EOV-Seg only: pred_masks (N, H, W), scores (N,), pred_classes (N,)


def check_class_name(name: str, source: str) -> None:
    """Raise a ValueError unless ``name`` is a class name: its synonyms (", "-separated) are
    each non-empty and hold a letter or digit (a stray separator would otherwise become a
    class or a synonym of its own)."""
    for synonym in name.split(","):
        if not synonym.strip():
            raise ValueError(f"{source}: {name!r} has an empty synonym (a stray or trailing comma); "
                             "separate synonyms with \", \" between two names")
        if not any(c.isalnum() for c in synonym):
            raise ValueError(f"{source}: {synonym.strip()!r} in {name!r} is not a name (no letter or digit)")


def parse_entry(entry: str, source: str) -> Vocabulary:
    """One class from "name" (stuff) or "name:thing" / "name:stuff"."""
    name, marker = entry.rsplit(":", 1) if ":" in entry else (entry, "stuff")
    if marker.strip() not in MARKERS:
        raise ValueError(f"{source}: {entry!r} ends with the unknown marker {marker!r}; "
                         f"write NAME:{' or NAME:'.join(MARKERS)}")
    if not name.strip():
        raise ValueError(f"{source}: {entry!r} has an empty class name")
    check_class_name(name.strip(), source)
    return Vocabulary((name.strip(),), (MARKERS[marker.strip()],))


def looks_like_path(entry: str) -> bool:
    """Whether a single vocabulary argument was meant as a file: it names a folder or ends with
    a vocabulary file's suffix."""
    return "/" in entry or os.sep in entry or entry.lower().endswith((".json", ".txt"))


def parse_vocabulary_spec(spec: Union[str, Sequence[str]], family: Union[str, ModelFamily], *,
                          files: bool = True) -> Vocabulary:
    """Classes with thing flags from a benchmark name of the model family (``ade150``,
    ``coco_panoptic``...), a file (JSON list of names and/or ``{"name", "isthing"}`` objects, or
    one class per line), or the entries themselves. Command-line entries and lines are "name"
    (stuff), "name:thing" or "name:stuff"; ", " inside a name separates synonyms. With
    ``files=False`` no file is read (a server parsing what a visitor typed): a single entry is
    a benchmark name or a class. ``family``: a :class:`ModelFamily` or its name.

    Benchmark names match whatever their case. A single entry that looks like a file (a folder
    or a .json / .txt suffix) must exist, and one close to a benchmark name stops with the
    suggestion; a name with an empty synonym or without a letter or digit stops too."""
    family = get_family(family) if isinstance(family, str) else family
    benchmarks = {name.lower(): name for name in family.benchmark_vocabularies}
    entries = [spec] if isinstance(spec, str) else list(spec)
    source = "the vocabulary"
    if len(entries) == 1:
        only = entries[0]
        is_file = files and os.path.isfile(only)
        if only.strip().lower() in benchmarks:
            path = vocabulary_path(family.benchmark_vocabularies[benchmarks[only.strip().lower()]])
            return parse_vocabulary(json.loads(path.read_text(encoding="utf-8")), source=str(path))
        others = [f.title for f in families()
                  if only.strip().lower() in map(str.lower, f.benchmark_vocabularies) and f is not family]
        choices = f"{', '.join(family.benchmark_vocabularies)}{', class names or a file' if files else ' or class names'}"
        if others and not is_file:
            raise ValueError(f"{only!r} is a benchmark vocabulary of {' / '.join(others)}; with {family.title} use "
                             f"one of {choices}")
        if files and not is_file and looks_like_path(only):
            raise FileNotFoundError(f"vocabulary file {only!r} does not exist (a file is read from the working "
                                    f"directory; or give one of {choices})")
        close = difflib.get_close_matches(only.strip().lower(), list(benchmarks), n=1, cutoff=0.8)
        if close and not is_file:
            raise ValueError(f"{only!r} is not a benchmark vocabulary of {family.title}: did you mean "
                             f"{benchmarks[close[0]]}? (a class of that name alone: write '{only.strip()}:stuff')")
        if is_file:
            source, text = repr(only), Path(only).read_text(encoding="utf-8")
            if text.lstrip().startswith(("[", "{")):
                try:
                    document = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{source} is not valid JSON ({e})") from None
                vocabulary = parse_vocabulary(document, source=source)
                for name in vocabulary.names:
                    check_class_name(name, source)
                return _non_empty(vocabulary, family)
            entries = text.splitlines()
    classes = [parse_entry(e, source) for e in entries if e.strip()]
    return _non_empty(Vocabulary(sum((c.names for c in classes), ()), sum((c.isthing for c in classes), ())), family)


def _non_empty(vocabulary: Vocabulary, family: ModelFamily) -> Vocabulary:
    if not len(vocabulary):
        raise ValueError("The vocabulary is empty: give class names, a vocabulary file or one of "
                         f"{', '.join(family.benchmark_vocabularies)}")
    return vocabulary


def resolve_vocabulary(spec: Union[str, Sequence[str]], family: Union[str, ModelFamily]) -> List[str]:
    """The class names of :func:`parse_vocabulary_spec`."""
    return list(parse_vocabulary_spec(spec, family).names)


def rgb_image(image: Any) -> np.ndarray:
    """``image`` as the (H, W, 3) uint8 RGB array the models take: such an array as it is, a PIL
    image converted to RGB, an (H, W, 3) uint8 tensor as an array. Anything else raises a
    ValueError (TypeError for what is no image) saying what is expected and how to convert it."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    elif isinstance(image, torch.Tensor):
        if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
            raise ValueError(f"a ({', '.join(map(str, image.shape))}) tensor is channels-first: give (H, W, 3), "
                             "e.g. image.permute(1, 2, 0)")
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"an image is an (H, W, 3) uint8 RGB numpy array, a PIL image or an (H, W, 3) uint8 tensor, "
                        f"not {type(image).__name__}")
    expected = "the predictor takes (H, W, 3) uint8 RGB images"
    if image.ndim == 2:
        raise ValueError(f"{expected}, not a greyscale (H, W) array: np.stack([image] * 3, axis=-1)")
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        if image.ndim == 3 and image.shape[0] == 3:
            raise ValueError(f"{expected}, not channels-first {image.shape}: image.transpose(1, 2, 0)")
        raise ValueError(f"{expected}, not an array of shape {image.shape}")
    if image.shape[-1] == 4:
        raise ValueError(f"{expected}, not 4 channels (RGBA): image[..., :3]")
    if image.dtype != np.uint8:
        hint = ("(image * 255).round().astype(np.uint8) for values in [0, 1]" if image.dtype.kind == "f"
                else "convert it to 8 bits per channel")
        raise ValueError(f"{expected}, not {image.dtype}: {hint}")
    if not image.shape[0] or not image.shape[1]:
        raise ValueError(f"{expected}: this one is empty ({image.shape[0]}x{image.shape[1]} pixels)")
    return image


def load_config(config_file: str, weights: str = "", opts: Sequence[str] = ()) -> CfgNode:
    """The frozen config of ``config_file`` with ``opts`` and ``weights`` (:func:`sed.config.build_config`)."""
    cfg = build_config(config_file, opts, weights=weights)
    cfg.freeze()
    return cfg


def panoptic_result(ids: torch.Tensor, info: List[dict], probabilities: torch.Tensor) -> Panoptic:
    """Segments of the model's panoptic output (``ids`` (H, W), ``info`` [{id, isthing,
    category_id}]) with their area and score (the mean share of the segment's class in the
    class scores ``probabilities`` (T, H, W) of its pixels)."""
    ids = ids.cpu()
    share = probabilities / probabilities.sum(0, keepdim=True).clamp_min(1e-12)
    segments = []
    for s in info:
        mask = ids == s["id"]
        segments.append(PanopticSegment(int(s["id"]), int(s["category_id"]), bool(s["isthing"]),
                                        float(share[s["category_id"]][mask].mean()), int(mask.sum())))
    return Panoptic(ids.numpy().astype(np.int32), segments)


class Predictor:
    """Build once, then segment RGB images (H, W, 3) uint8 with any vocabulary; any model family
    (the config's MODEL.META_ARCHITECTURE)."""

    def __init__(self, cfg: CfgNode):
        self.family = get_family(cfg)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.merge_from_list(list(self.family.predictor_opts))
        cfg.freeze()
        self.cfg = cfg
        self.family.check_call_options(cfg)
        check_weights_given(cfg)
        configure_cpu_memory(cfg)
        self.model = build_model(cfg).eval()
        if cfg.MODEL.WEIGHTS:
            Checkpointer(self.model).load(cfg.MODEL.WEIGHTS)
        maybe_compile(self.model, cfg)
        self.resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        self.default_vocabulary = self.family.model_vocabulary(self.model)  # its config's test vocabulary

    @classmethod
    def from_config_file(cls, config_file: str, weights: str = "", opts: Sequence[str] = ()) -> "Predictor":
        return cls(load_config(config_file, weights, opts))

    def vocabulary(self, spec: Union[str, Sequence[str], Vocabulary]) -> Vocabulary:
        """``spec`` as a :class:`Vocabulary` (see :func:`parse_vocabulary_spec`)."""
        return spec if isinstance(spec, Vocabulary) else parse_vocabulary_spec(spec, self.family)

    def __call__(self, image: np.ndarray, vocabulary: Union[str, Sequence[str], Vocabulary],
                 options: Optional[Mapping[str, Any]] = None) -> Segmentation:
        return self.predict_batch([image], vocabulary, options)[0]

    @contextmanager
    def call_options(self, options: Optional[Mapping[str, Any]]):
        """Within the block, the model runs with ``options`` (config key -> value, keys of
        its family's ``call_options``, values of the config value's type) instead of its
        config's values."""
        known = {option.key: option.attribute for option in self.family.call_options}
        unknown = sorted(set(options or {}) - set(known))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not an option of a {self.family.title} call; "
                             f"the options are {', '.join(known)} (others are set when the model is built)")
        for key, value in (options or {}).items():
            default = config_value(self.cfg, key)
            accepted = (int, float) if isinstance(default, float) else type(default)
            if not isinstance(value, accepted) or isinstance(value, bool) != isinstance(default, bool):
                raise ValueError(f"{key} takes {type(default).__name__} values, not {value!r}")
            next(o for o in self.family.call_options if o.key == key).check(value, "this call")
        saved = {key: getattr(self.model, attribute) for key, attribute in known.items()}
        try:
            for key, value in (options or {}).items():
                setattr(self.model, known[key], value)
            yield
        finally:
            for key, value in saved.items():
                setattr(self.model, known[key], value)

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray], vocabulary: Union[str, Sequence[str], Vocabulary],
                      options: Optional[Mapping[str, Any]] = None) -> List[Segmentation]:
        """Segment ``images`` ((H, W, 3) uint8 RGB arrays, or PIL images or (H, W, 3) uint8
        tensors: :func:`rgb_image`) with ``vocabulary``; ``options`` (see :meth:`call_options`)
        change inference settings for this call only."""
        images = [rgb_image(image) for image in images]
        vocabulary = self.vocabulary(vocabulary)
        self.family.set_vocabulary(self.model, vocabulary)
        inputs = []
        for image in images:
            resized = self.resize.get_transform(image).apply_image(image)
            inputs.append({"image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
                           "height": image.shape[0], "width": image.shape[1]})
        with self.call_options(options):
            outputs = self.model(inputs)
        results = []
        for out in outputs:
            probs = out["sem_seg"].float().cpu()
            panoptic = panoptic_result(*out["panoptic_seg"], probs) if "panoptic_seg" in out else None
            instances = out["instances"].to("cpu") if "instances" in out else None
            results.append(Segmentation(probs.argmax(0).numpy(), probs, list(vocabulary.names),
                                        list(vocabulary.isthing), panoptic, instances))
        return results


SEDPredictor = Predictor  # its earlier name, kept for existing scripts
