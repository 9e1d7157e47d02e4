"""Run models exported by ``tools/export.py`` with onnxruntime: pre-processing, a vocabulary's
graph inputs (its text embeddings through the exported text tower), and the post-processing
the PyTorch model does after its network, in NumPy.

    from sed.deploy import ExportedModel
    model = ExportedModel("eov_seg.onnx", text_encoder="eov_seg_text.onnx")
    vocabulary = ["person:thing", "car:thing", "sky", "road"]
    embeddings = model.embed(vocabulary)       # once per vocabulary (np.save / np.load it)
    out = model(image_rgb, vocabulary, embeddings)
    out["panoptic_seg"]                         # (H, W) int32 ids, [{"id", "category_id", "isthing"}]

The graphs' inputs and outputs are described in :mod:`sed.export`; each model family says how
its file is fed and read (``ModelFamily.deploy``, :class:`sed.family.DeploySpec`): SED's graph
takes the (3, H, W) float32 0..255 image and returns (T, H, W) probabilities at that size;
EOV-Seg's is fed a resized, normalised and padded image and post-processed in NumPy
(:mod:`sed.modeling.eov_seg.deploy`).
"""
import json
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .clip.text import ClassEmbeddingCache
from .family import get_family
from .predictor import parse_vocabulary_spec
from .vocabulary import Vocabulary

METADATA_KEY = "sed"  # the key of the JSON metadata tools/export.py writes


def read_metadata(path: str) -> dict:
    """The metadata ``tools/export.py`` wrote into an ONNX file (JSON under :data:`METADATA_KEY`)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path} was not written by tools/export.py (no {METADATA_KEY!r} metadata)")
    return json.loads(props[METADATA_KEY])


def onnxruntime_session(path: str, threads: int = 0, providers: Optional[Sequence[str]] = None):
    """An onnxruntime session of ``path`` on ``providers`` (default: CUDA where this onnxruntime
    has it, then the CPU) with ``threads`` intra-op threads (0: onnxruntime's choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only (not the graph optimiser's notes)
    available = ort.get_available_providers()
    chosen = list(providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available])
    return ort.InferenceSession(str(path), options, providers=chosen)


def image_to_chw(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 0..255, contiguous."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)


# --- vocabulary --------------------------------------------------------------------------------


def text_embeddings(text_session, class_names: Sequence[str], text_metadata: dict) -> np.ndarray:
    """The class text embeddings of ``class_names`` (SED (T, P, C), EOV-Seg (S, D)) with the
    exported text tower ``text_session``: the prompts, tokenizer and prompt ensemble are the
    model's own (``ClassEmbeddingCache``), the text tower runs in onnxruntime."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=text_metadata["context_length"],
                                **text_metadata.get("tokenizer_kwargs", {}))
    cache = ClassEmbeddingCache(model_name=text_metadata["clip_model"], templates=text_metadata["templates"],
                                cache_dir="", ensemble=text_metadata["prompt_ensemble"], tokenizer=tokenizer)

    def encode(tokens: torch.Tensor) -> torch.Tensor:  # prompts of one length, cut after end-of-text
        cut = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
        return torch.from_numpy(text_session.run(["embeddings"], {"tokens": cut.numpy()})[0])

    return cache.compute_with(encode, list(class_names)).numpy()


# --- all of it ---------------------------------------------------------------------------------


class ExportedModel:
    """An exported model (and its text tower) run by onnxruntime, from an RGB image to the
    outputs the PyTorch model gives (SED ``sem_seg`` (T, H, W) probabilities; EOV-Seg those of
    :func:`sed.modeling.eov_seg.deploy.postprocess`), at the image's size."""

    def __init__(self, path: str, text_encoder: str = "", threads: int = 0,
                 providers: Optional[Sequence[str]] = None):
        """
        Args:
            path: the image side (``tools/export.py --output``).
            text_encoder: the text tower (``--text-encoder``), for :meth:`embed`.
            threads, providers: of the onnxruntime sessions (:func:`onnxruntime_session`); the
                threads also run the family's post-processing.
        """
        self.threads = threads
        self.metadata = read_metadata(path)
        self.family = get_family(self.metadata["family"])
        self.session = onnxruntime_session(path, threads, providers)
        self.text_session = onnxruntime_session(text_encoder, threads, providers) if text_encoder else None

    def vocabulary(self, spec: Union[str, Sequence[str], Vocabulary]) -> Vocabulary:
        """A :class:`Vocabulary` from names ("name:thing" marks a thing), a file or a benchmark name."""
        return spec if isinstance(spec, Vocabulary) else parse_vocabulary_spec(spec, self.family)

    def embed(self, vocabulary: Union[str, Sequence[str], Vocabulary]) -> np.ndarray:
        """The vocabulary's text embeddings from the exported text tower (compute once per
        vocabulary and keep them: they do not depend on the image)."""
        if self.text_session is None:
            raise ValueError("no text tower: give text_encoder (tools/export.py --text-encoder)")
        return text_embeddings(self.text_session, self.vocabulary(vocabulary).names, self.metadata["text"])

    def preprocess(self, image: np.ndarray, resize: bool = True):
        """(H, W, 3) uint8 RGB -> the graph's ``image`` input and its (H, W) before padding;
        ``resize``: the model's input resize first (False: the image is already at that size)."""
        deploy = self.family.deploy
        return deploy.preprocess(deploy.resize(image, self.metadata) if resize else image, self.metadata)

    def run(self, image: np.ndarray, inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
        """The graph on a pre-processed ``image`` (:meth:`preprocess`) and vocabulary ``inputs``."""
        return self.session.run(self.metadata["outputs"], {"image": image, **inputs})

    def __call__(self, image: np.ndarray, vocabulary: Union[str, Sequence[str], Vocabulary],
                 embeddings: np.ndarray, *, resize: bool = True, **switches: bool) -> dict:
        """Outputs for an (H, W, 3) uint8 RGB image at its size.

        Args:
            embeddings: the vocabulary's (:meth:`embed`).
            resize: as :meth:`preprocess`.
            switches: outputs on or off (EOV-Seg: ``semantic_on``, ``panoptic_on``, ``instance_on``).
        """
        vocabulary = self.vocabulary(vocabulary)
        deploy = self.family.deploy
        x, size = self.preprocess(image, resize)
        outputs = self.run(x, deploy.vocabulary_inputs(embeddings, vocabulary, self.metadata))
        return deploy.postprocess(outputs, size, image.shape[:2], vocabulary.isthing, self.metadata, self.threads,
                                  **switches)
