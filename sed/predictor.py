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
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances

from .config import build_config
from .cpu_memory import configure_cpu_memory
from .family import ModelFamily, families, get_family
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


def parse_entry(entry: str, source: str) -> Vocabulary:
    """One class from "name" (stuff) or "name:thing" / "name:stuff"."""
    name, marker = entry.rsplit(":", 1) if ":" in entry else (entry, "stuff")
    if marker.strip() not in MARKERS:
        raise ValueError(f"{source}: {entry!r} ends with the unknown marker {marker!r}; "
                         f"write NAME:{' or NAME:'.join(MARKERS)}")
    if not name.strip():
        raise ValueError(f"{source}: {entry!r} has an empty class name")
    return Vocabulary((name.strip(),), (MARKERS[marker.strip()],))


def parse_vocabulary_spec(spec: Union[str, Sequence[str]], family: Union[str, ModelFamily], *,
                          files: bool = True) -> Vocabulary:
    """Classes with thing flags from a benchmark name of the model family (``ade150``,
    ``coco_panoptic``...), a file (JSON list of names and/or ``{"name", "isthing"}`` objects, or
    one class per line), or the entries themselves. Command-line entries and lines are "name"
    (stuff), "name:thing" or "name:stuff"; ", " inside a name separates synonyms. With
    ``files=False`` no file is read (a server parsing what a visitor typed): a single entry is
    a benchmark name or a class. ``family``: a :class:`ModelFamily` or its name."""
    family = get_family(family) if isinstance(family, str) else family
    benchmarks = family.benchmark_vocabularies
    entries = [spec] if isinstance(spec, str) else list(spec)
    source = "the vocabulary"
    if len(entries) == 1:
        only = entries[0]
        is_file = files and os.path.isfile(only)
        if only in benchmarks:
            path = vocabulary_path(benchmarks[only])
            return parse_vocabulary(json.loads(path.read_text(encoding="utf-8")), source=str(path))
        others = [f.title for f in families() if only in f.benchmark_vocabularies and f is not family]
        if others and not is_file:
            raise ValueError(f"{only!r} is a benchmark vocabulary of {' / '.join(others)}; with {family.title} use "
                             f"one of {', '.join(benchmarks)}{', class names or a file' if files else ' or class names'}")
        if is_file:
            source, text = repr(only), Path(only).read_text(encoding="utf-8")
            if text.lstrip().startswith("["):
                try:
                    return _non_empty(parse_vocabulary(json.loads(text), source=source), family)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{source} is not valid JSON ({e})") from None
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
        configure_cpu_memory(cfg)
        self.model = build_model(cfg).eval()
        if cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
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
            default = reduce(getattr, key.split("."), self.cfg)
            accepted = (int, float) if isinstance(default, float) else type(default)
            if not isinstance(value, accepted) or isinstance(value, bool) != isinstance(default, bool):
                raise ValueError(f"{key} takes {type(default).__name__} values, not {value!r}")
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
        """Segment ``images`` ((H, W, 3) uint8 RGB each) with ``vocabulary``; ``options``
        (see :meth:`call_options`) change inference settings for this call only."""
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
