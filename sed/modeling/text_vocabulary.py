"""Text side: prompt-ensembled class embeddings, cached in memory and on disk.

A class name may list synonyms separated by ", ". For a class with S names the prompts are,
template by template, each synonym in turn (P x S texts). Each prompt is encoded by the CLIP
text tower and L2-normalised; the S embeddings of a template are averaged and normalised
again. A vocabulary of T classes gives a (T, P, C) float32 tensor.
"""
import hashlib
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torch import nn
from tqdm import tqdm

logger = logging.getLogger(__name__)

PROMPT_TEMPLATES = {
    "imagenet": tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES),
    "single": ("A photo of a {} in the scene",),
}
SYNONYM_SEPARATOR = ", "
PROMPTS_PER_CALL = 512


def load_class_names(path: str) -> List[str]:
    """Read a vocabulary file: a JSON list of class names (kept byte for byte)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Class-name file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        names = json.load(f)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path!r} must hold a JSON list of class-name strings")
    return names


def encode_prompts(clip_model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Encode tokenised prompts with the CLIP text tower.

    The context is cut after the last end-of-text token of the batch: with causal attention
    the later (padding) tokens cannot change the pooled embedding, so this equals the
    full-context result while costing a fraction of it.

    Args:
        tokens: (N, L) token ids, end-of-text being the largest id of each row.
    Returns:
        (N, C) text embeddings (not normalised).
    """
    if not hasattr(clip_model, "token_embedding"):
        return clip_model.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    x = clip_model.token_embedding(tokens) + clip_model.positional_embedding[:length]
    x = clip_model.transformer(x, attn_mask=clip_model.attn_mask[:length, :length])
    x = clip_model.ln_final(x)
    x = text_global_pool(x, tokens, clip_model.text_pool_type)
    projection = clip_model.text_projection
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


class ClassEmbeddingCache:
    """Class embeddings of vocabularies, computed once from the current text-tower weights.

    Entries are kept in memory (keyed by the names) and on disk (keyed by a hash of the model
    name, the templates, the names and the text-tower weights, so other weights or names never
    hit a stale entry). Call :meth:`clear` after the weights change.
    """

    def __init__(self, *, model_name: str, templates: Sequence[str], cache_dir: str):
        self.model_name = model_name
        self.templates = tuple(templates)
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else ""
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self._memory: Dict[Tuple[str, ...], torch.Tensor] = {}
        self._weights_digest: Optional[str] = None

    def clear(self) -> None:
        self._memory.clear()
        self._weights_digest = None

    def put(self, class_names: Sequence[str], embeddings: torch.Tensor) -> None:
        """Use ``embeddings`` (T, P, C) for ``class_names`` (in memory only), e.g. precomputed ones."""
        if embeddings.shape[0] != len(class_names):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(class_names)} class names")
        self._memory[tuple(class_names)] = embeddings.float()

    def get(self, clip_model: nn.Module, class_names: Sequence[str]) -> torch.Tensor:
        """Return the (T, P, C) float32 embeddings of ``class_names`` on the model's device."""
        key = tuple(class_names)
        if not key:
            raise ValueError("The vocabulary is empty: give at least one class name")
        device = clip_model.token_embedding.weight.device
        if key not in self._memory:
            self._memory[key] = self._load_or_compute(clip_model, key)
        embeddings = self._memory[key]
        if embeddings.device != device:
            embeddings = self._memory[key] = embeddings.to(device)
        return embeddings

    def _load_or_compute(self, clip_model: nn.Module, names: Tuple[str, ...]) -> torch.Tensor:
        path = self._disk_path(clip_model, names) if self.cache_dir else ""
        if path and os.path.isfile(path):
            return torch.load(path, map_location="cpu", weights_only=True)
        embeddings = self.compute(clip_model, names).cpu()
        if path:
            os.makedirs(self.cache_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            torch.save(embeddings, tmp)
            os.replace(tmp, path)
        return embeddings

    def _disk_path(self, clip_model: nn.Module, names: Tuple[str, ...]) -> str:
        if self._weights_digest is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(clip_model.state_dict().items()):
                if not name.startswith("visual."):
                    digest.update(name.encode())
                    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._weights_digest = digest.hexdigest()
        key = json.dumps([self.model_name, self.templates, names, self._weights_digest])
        return os.path.join(self.cache_dir, hashlib.sha256(key.encode()).hexdigest() + ".pt")

    @torch.no_grad()
    def compute(self, clip_model: nn.Module, names: Sequence[str]) -> torch.Tensor:
        """Encode the prompts of ``names``: (T, P, C) float32, in full precision even under
        autocast (the embeddings are cached, whatever precision later uses them)."""
        device = clip_model.token_embedding.weight.device
        with torch.autocast(device.type, enabled=False):
            return self._compute(clip_model, names, device)

    def _compute(self, clip_model: nn.Module, names: Sequence[str], device: torch.device) -> torch.Tensor:
        synonyms = [name.split(SYNONYM_SEPARATOR) for name in names]
        prompts = [t.format(s) for syn in synonyms for t in self.templates for s in syn]
        tokens = self.tokenizer(prompts)
        # Prompts of similar length share a call, so each call's context is cut short.
        order = tokens.argmax(dim=-1).argsort(stable=True)
        chunks = range(0, len(prompts), PROMPTS_PER_CALL)
        encoded = torch.cat([
            F.normalize(encode_prompts(clip_model, tokens[order[i : i + PROMPTS_PER_CALL]].to(device)).float(), dim=-1)
            for i in tqdm(chunks, desc=f"Encoding {len(names)} class names", unit="batch",
                          disable=len(chunks) < 4)
        ])
        encoded = encoded[order.argsort().to(encoded.device)]
        out, start = [], 0
        for syn in synonyms:
            count = len(self.templates) * len(syn)
            emb = encoded[start : start + count].view(len(self.templates), len(syn), -1)
            start += count
            out.append(F.normalize(emb.mean(dim=1), dim=-1) if len(syn) > 1 else emb[:, 0])
        return torch.stack(out)
