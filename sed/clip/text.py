"""Text side shared by every model: prompt-ensembled class embeddings, cached in memory and
on disk.

Each prompt (a template filled with a class name) is encoded by the CLIP text tower and
L2-normalised; a :class:`PromptEnsemble` decides how a class's names are split into
synonyms and how the embeddings of its prompts are combined:

- ``per_template`` (SED): per class and template, the synonyms' embeddings averaged and
  normalised again -> (T, P, C) for T classes and P templates;
- ``per_name`` (EOV-Seg): per name, the templates' embeddings averaged and normalised
  again -> (S, C) for the S names of all classes, in class order.
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
    # ViLD's prompts, as EOV-Seg uses them (four have no final period).
    "vild": (
        "a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene",
        "There is the {} in the scene", "a photo of a {} in the scene", "a photo of a small {}.",
        "a photo of a medium {}.", "a photo of a large {}.", "This is a photo of a small {}.",
        "This is a photo of a medium {}.", "This is a photo of a large {}.",
        "There is a small {} in the scene.", "There is a medium {} in the scene.",
        "There is a large {} in the scene.",
    ),
}
PROMPTS_PER_CALL = 512


class PromptEnsemble:
    """How one class's prompts are made and their (normalised) embeddings combined."""

    def split(self, class_name: str) -> List[str]:
        """The names (synonyms) of a class."""
        raise NotImplementedError

    def prompts(self, templates: Sequence[str], names: Sequence[str]) -> List[str]:
        raise NotImplementedError

    def combine(self, embeddings: torch.Tensor, num_templates: int, num_names: int) -> torch.Tensor:
        """(num prompts, C) embeddings of one class, in :meth:`prompts` order -> its entry."""
        raise NotImplementedError

    def join(self, entries: List[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class SynonymsPerTemplate(PromptEnsemble):
    """SED: names separated by ", "; per template, the synonyms averaged -> (T, P, C)."""

    def split(self, class_name: str) -> List[str]:
        return class_name.split(", ")

    def prompts(self, templates, names):
        return [t.format(s) for t in templates for s in names]

    def combine(self, embeddings, num_templates, num_names):
        emb = embeddings.view(num_templates, num_names, -1)
        return F.normalize(emb.mean(dim=1), dim=-1) if num_names > 1 else emb[:, 0]

    def join(self, entries):
        return torch.stack(entries)


class TemplatesPerName(PromptEnsemble):
    """EOV-Seg: names separated by "," or ", "; per name, the templates averaged -> (S, C)."""

    def split(self, class_name: str) -> List[str]:
        return class_name.replace(", ", ",").split(",")

    def prompts(self, templates, names):
        return [t.format(s) for s in names for t in templates]

    def combine(self, embeddings, num_templates, num_names):
        return F.normalize(embeddings.view(num_names, num_templates, -1).mean(dim=1), dim=-1)

    def join(self, entries):
        return torch.cat(entries)


PROMPT_ENSEMBLES: Dict[str, PromptEnsemble] = {
    "per_template": SynonymsPerTemplate(),
    "per_name": TemplatesPerName(),
}


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
    name, the templates, the ensemble, the names and the text-tower weights, so other weights
    or names never hit a stale entry). Call :meth:`clear` after the weights change.
    """

    def __init__(self, *, model_name: str, templates: Sequence[str], cache_dir: str,
                 ensemble: str = "per_template"):
        """
        Args:
            model_name: open_clip name of the model (its tokenizer, and part of the disk key).
            templates: prompt templates, "{}" standing for a name.
            cache_dir: folder of the disk cache ("" for memory only).
            ensemble: a key of ``PROMPT_ENSEMBLES``.
        """
        if ensemble not in PROMPT_ENSEMBLES:
            raise ValueError(f"Unknown prompt ensemble {ensemble!r}; choose one of {sorted(PROMPT_ENSEMBLES)}")
        self.model_name = model_name
        self.templates = tuple(templates)
        self.ensemble_name = ensemble
        self.ensemble = PROMPT_ENSEMBLES[ensemble]
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else ""
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self._memory: Dict[Tuple[str, ...], torch.Tensor] = {}
        self._weights_digest: Optional[str] = None

    def clear(self) -> None:
        self._memory.clear()
        self._weights_digest = None

    def put(self, class_names: Sequence[str], embeddings: torch.Tensor) -> None:
        """Use ``embeddings`` for ``class_names`` (in memory only), e.g. precomputed ones."""
        expected = self.num_entries(class_names)
        if embeddings.shape[0] != expected:
            raise ValueError(f"{embeddings.shape[0]} embeddings for {expected} entries of {len(class_names)} classes")
        self._memory[tuple(class_names)] = embeddings.float()

    def num_names(self, class_names: Sequence[str]) -> List[int]:
        """Number of names (synonyms) of each class."""
        return [len(self.ensemble.split(name)) for name in class_names]

    def num_entries(self, class_names: Sequence[str]) -> int:
        """Rows of the embeddings of ``class_names``: T (per template) or S (per name)."""
        return sum(self.num_names(class_names)) if self.ensemble_name == "per_name" else len(class_names)

    def get(self, clip_model: nn.Module, class_names: Sequence[str]) -> torch.Tensor:
        """Return the float32 embeddings of ``class_names`` on the model's device: (T, P, C)
        per template, (S, C) per name."""
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
        key = json.dumps([self.model_name, self.templates, self.ensemble_name, names, self._weights_digest])
        return os.path.join(self.cache_dir, hashlib.sha256(key.encode()).hexdigest() + ".pt")

    @torch.no_grad()
    def compute(self, clip_model: nn.Module, names: Sequence[str]) -> torch.Tensor:
        """Encode the prompts of ``names`` in float32, in full precision even under autocast
        (the embeddings are cached, whatever precision later uses them)."""
        device = clip_model.token_embedding.weight.device
        with torch.autocast(device.type, enabled=False):
            return self._compute(clip_model, names, device)

    def _compute(self, clip_model: nn.Module, names: Sequence[str], device: torch.device) -> torch.Tensor:
        synonyms = [self.ensemble.split(name) for name in names]
        per_class = [self.ensemble.prompts(self.templates, syn) for syn in synonyms]
        prompts = [p for class_prompts in per_class for p in class_prompts]
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
        entries = []
        for syn, class_prompts in zip(synonyms, per_class):
            emb, encoded = encoded[: len(class_prompts)], encoded[len(class_prompts) :]
            entries.append(self.ensemble.combine(emb, len(self.templates), len(syn)))
        return self.ensemble.join(entries)
