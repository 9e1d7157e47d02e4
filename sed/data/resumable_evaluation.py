"""Evaluation that survives a kill: the evaluators' state is saved as it grows, and a rerun of
the same command resumes after the images it covers, with the metrics of an uninterrupted run.

Every ``TEST.PARTIAL_EVERY`` images, each process writes what its evaluators accumulated since
its previous write (confusion matrices, panoptic PNGs and segments, instance predictions: the
attributes each evaluator names in ``RESUMABLE_STATE``) to a chunk file of its own in
``OUTPUT_DIR/inference/DATASET/partial/``, atomically (temporary file, fsync, rename) and with
a header holding the payload's length and SHA-256, so a truncated or damaged chunk is detected,
removed and its images evaluated again. A rerun with the same weights (hashed from the model's
tensors), config and images adds the saved chunks to the main process's evaluators and runs the
model on the remaining images only, split across however many processes it has. Each image's
output does not depend on the images before it, integer confusion matrices add up exactly,
and PQ (matched in the ground truth's order) and AP (pycocotools sorts each image's
detections) do not depend on the order of the predictions, so the final metrics are bit for
bit those of an uninterrupted run. The folder is removed once the results are written (unless
``TEST.KEEP_PARTIAL``).
"""
import datetime
import hashlib
import logging
import os
import pickle
import shutil
import struct
import time
import zlib
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import log_every_n_seconds

logger = logging.getLogger(__name__)

# Config keys that change where, how often or how fast an evaluation writes, not its results.
# MODEL.WEIGHTS is replaced by the hash of the loaded model, DATASETS.TEST by the dataset's name.
SAME_RESULTS_KEYS = ("OUTPUT_DIR", "MODEL.WEIGHTS", "DATASETS.TEST", "DATALOADER.NUM_WORKERS",
                     "TEST.PARTIAL_EVERY", "TEST.KEEP_PARTIAL")
# The key the remaining images' dataset dicts carry their index in the full dataset under.
INDEX_KEY = "dataset_index"
# Chunk file: magic, payload length and SHA-256 of the payload, then the payload (a
# zlib-compressed pickle of {"fingerprint", "indices", "states"}).
MAGIC = b"SEDPART1"
HEADER = struct.Struct(">8sQ32s")
CHUNK_SUFFIX = ".chunk"


class CorruptChunk(ValueError):
    """A chunk file that is truncated, damaged or not a chunk."""


def write_chunk(path: str, content: Any) -> None:
    """Writes ``content`` to ``path`` atomically: a kill leaves the previous file (or none)
    and at most a temporary file next to it, never a partly written ``path``."""
    payload = zlib.compress(pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL), 1)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "wb") as f:
        f.write(HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest()))
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a crash of the machine
    finally:
        os.close(folder)


def read_chunk(path: str) -> Any:
    """The content ``write_chunk`` wrote to ``path``; raises ``CorruptChunk`` saying what is
    wrong with the file otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER.size:
        raise CorruptChunk(f"{len(data)} bytes, shorter than the {HEADER.size}-byte header")
    magic, length, digest = HEADER.unpack_from(data)
    payload = data[HEADER.size:]
    if magic != MAGIC:
        raise CorruptChunk("not a partial-evaluation chunk (wrong magic bytes)")
    if len(payload) != length:
        raise CorruptChunk(f"truncated: {len(payload)} of {length} payload bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptChunk("damaged: the payload's SHA-256 differs from the header's")
    try:
        return pickle.loads(zlib.decompress(payload))
    except Exception as e:  # sound bytes that this environment cannot read (e.g. another NumPy)
        raise CorruptChunk(f"unreadable here: {e!r}") from e


def evaluation_config(cfg: CfgNode) -> str:
    """``cfg`` as YAML without ``SAME_RESULTS_KEYS``: equal for two evaluations that compute
    the same thing with the same weights."""
    cfg = cfg.clone()
    cfg.defrost()
    for key in SAME_RESULTS_KEYS:
        *path, last = key.split(".")
        node = cfg
        for name in path:
            node = node[name]
        node.pop(last, None)
    return cfg.dump()


def model_digest(model) -> str:
    """SHA-256 of the model's state dict (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def fingerprint(cfg: CfgNode, dataset_name: str, dataset: Sequence[Dict], model) -> str:
    """What a saved chunk must have been computed with to be resumed: the model's tensors,
    the config (``evaluation_config``) and the dataset's name and images, in order."""
    digest = hashlib.sha256()
    for part in (model_digest(model), evaluation_config(cfg), dataset_name,
                 *(d["file_name"] for d in dataset)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def load_chunks(folder: str, expected: str) -> List[Dict]:
    """The chunks in ``folder`` computed for fingerprint ``expected``, in dataset order; removes
    unfinished writes and chunks that are damaged or of another fingerprint, saying so."""
    if not os.path.isdir(folder):
        return []
    chunks, stale = [], 0
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith(CHUNK_SUFFIX):
            logger.warning(f"Removing {path}: a write that did not finish (the process was killed during it)")
            os.remove(path)
            continue
        try:
            chunk = read_chunk(path)
        except CorruptChunk as e:
            logger.warning(f"Partial evaluation chunk {path} is unusable ({e}): removed; its images are "
                           "evaluated again")
            os.remove(path)
            continue
        if chunk["fingerprint"] != expected:
            stale += 1
            os.remove(path)
            continue
        chunks.append(chunk)
    if stale:
        logger.warning(f"Removed {stale} partial evaluation chunk(s) from {folder}: they were computed with "
                       "other weights, config or images")
    return chunks


class ResumableEvaluator(DatasetEvaluators):
    """``DatasetEvaluators`` whose state is saved every ``every`` images to chunk files in
    ``folder`` and resumed from them (see the module's docstring).

    Built on every process (a collective call): the main process hashes the model, loads the
    chunks saved for this fingerprint and tells the others which images they cover. Feed it
    ``remaining(dataset)`` (the images still to evaluate, tagged with their index) through
    ``inference_on_dataset``; ``evaluate`` saves the last chunk before the evaluators combine
    the processes' states, and ``finish`` removes the folder once the results are safe.
    Each evaluator names its accumulated state in ``RESUMABLE_STATE``: attributes holding
    NumPy arrays (summed) or lists (concatenated) that ``process`` adds to.
    """

    def __init__(self, evaluators: List, *, folder: str, cfg: CfgNode, dataset_name: str,
                 dataset: Sequence[Dict], model, every: int, keep: bool):
        for evaluator in evaluators:
            if not getattr(evaluator, "RESUMABLE_STATE", None):
                raise TypeError(f"{type(evaluator).__name__} names no RESUMABLE_STATE, so its evaluation cannot "
                                "be saved and resumed: add it, or set TEST.PARTIAL_EVERY 0")
        super().__init__(evaluators)
        self._folder, self._every, self._keep = folder, every, keep
        self._dataset_name, self._num_images = dataset_name, len(dataset)
        chunks, found = [], None
        if comm.is_main_process():
            expected = fingerprint(cfg, dataset_name, dataset, model)
            chunks = load_chunks(folder, expected)
            found = (expected, sorted(i for chunk in chunks for i in chunk["indices"]))
            os.makedirs(folder, exist_ok=True)
        self._fingerprint, done = comm.all_gather(found)[0]  # also the others' wait for the folder
        self._chunks, self._done = chunks, set(done)
        if comm.is_main_process():
            if done:
                logger.info(f"Resuming the evaluation on {dataset_name}: {len(done)} of {len(dataset)} images "
                            f"done in {folder}, {len(dataset) - len(done)} to go")
            else:
                logger.info(f"Evaluating {dataset_name} ({len(dataset)} images), saving the state every {every} "
                            f"images per process to {folder}")

    def remaining(self, dataset: Sequence[Dict]) -> List[Dict]:
        """The images of ``dataset`` not covered by saved chunks, in dataset order, each a
        copy of its dict with its index in ``dataset`` under ``INDEX_KEY``."""
        return [dict(d, **{INDEX_KEY: i}) for i, d in enumerate(dataset) if i not in self._done]

    def reset(self):
        super().reset()
        for chunk in self._chunks:  # the main process's evaluators start from the saved state
            if len(chunk["states"]) != len(self._evaluators):
                raise ValueError(f"A saved chunk holds {len(chunk['states'])} evaluators' state, "
                                 f"this evaluation has {len(self._evaluators)}")
            for evaluator, state in zip(self._evaluators, chunk["states"]):
                for name, value in state.items():
                    _add(getattr(evaluator, name), value, f"{type(evaluator).__name__}.{name}")
        self._chunks = []
        self._saved = [{name: _mark(getattr(e, name)) for name in e.RESUMABLE_STATE} for e in self._evaluators]
        self._pending: List[int] = []
        self._processed, self._start = 0, time.perf_counter()

    def process(self, inputs, outputs):
        super().process(inputs, outputs)
        if any(INDEX_KEY not in x for x in inputs):
            raise KeyError(f"Inputs without '{INDEX_KEY}': feed ResumableEvaluator.remaining(dataset) to the model")
        self._pending += [x[INDEX_KEY] for x in inputs]
        self._processed += len(inputs)
        if len(self._pending) >= self._every:
            self._save()
        self._log_progress()

    def evaluate(self):
        if self._pending:
            self._save()
        return super().evaluate()

    def finish(self) -> None:
        """Removes the saved state (main process), unless it is to be kept."""
        if comm.is_main_process() and not self._keep:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _save(self) -> None:
        states = []
        for evaluator, saved in zip(self._evaluators, self._saved):
            states.append({})
            for name, mark in saved.items():
                states[-1][name], saved[name] = _since(getattr(evaluator, name), mark)
        indices = self._pending
        path = os.path.join(self._folder, f"{indices[0]:07d}-{indices[-1]:07d}{CHUNK_SUFFIX}")
        write_chunk(path, {"fingerprint": self._fingerprint, "indices": indices, "states": states})
        self._pending = []

    def _log_progress(self) -> None:
        """Images of the whole dataset done (the other processes taken to be as far as this
        one), with the ETA at this process's speed."""
        world, resumed = comm.get_world_size(), len(self._done)
        done = min(self._num_images, resumed + self._processed * world)
        per_image = (time.perf_counter() - self._start) / (self._processed * world)
        eta = datetime.timedelta(seconds=int(per_image * (self._num_images - done)))
        log_every_n_seconds(logging.INFO, f"{self._dataset_name}: {done}/{self._num_images} images evaluated "
                            f"(resumed from {resumed}), ETA {eta}", n=10)


def _mark(value) -> Any:
    """What ``_since`` needs to tell what was added to ``value`` after this call."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return len(value)
    raise TypeError(f"Resumable evaluator state must be NumPy arrays or lists, not {type(value).__name__}")


def _since(value, mark) -> Tuple[Any, Any]:
    """(what was added to ``value`` since ``mark``, a new mark)."""
    if isinstance(value, np.ndarray):
        return value - mark, value.copy()
    return value[mark:], len(value)


def _add(value, delta, name: str) -> None:
    if isinstance(value, np.ndarray):
        if value.shape != delta.shape:
            raise ValueError(f"Saved {name} has shape {delta.shape}, the evaluator's {value.shape}")
        value += delta
    else:
        value.extend(delta)
