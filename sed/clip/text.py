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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, text_global_pool
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
    return encode_tokens(clip_model, tokens[:, :length])


def encode_tokens(clip_model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The text tower on (N, L) token ids, L at most its context length, end-of-text being the
    largest id of each row -> (N, C) text embeddings (not normalised). No step depends on the
    tokens' values, so it exports to a graph for any N and L."""
    if not hasattr(clip_model, "token_embedding"):
        return clip_model.encode_text(tokens)
    length = tokens.shape[1]
    x = clip_model.token_embedding(tokens) + clip_model.positional_embedding[:length]
    # The causal mask of ``length`` tokens (open_clip's, made anew: a slice of the stored one
    # would tie an exported graph to one length).
    mask = torch.full((length, length), float("-inf"), device=x.device).triu(1)
    x = clip_model.transformer(x, attn_mask=mask if clip_model.attn_mask is not None else None)
    x = clip_model.ln_final(x)
    x = text_global_pool(x, tokens, clip_model.text_pool_type)
    return project_text(clip_model, x)


def project_text(clip_model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    projection = clip_model.text_projection
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def shares_prefixes(clip_model: nn.Module) -> bool:
    """Whether :func:`encode_after_prefix` can run this text tower: open_clip's standard
    causal transformer (``ResidualAttentionBlock`` with packed projections), argmax pooling."""
    transformer = getattr(clip_model, "transformer", None)
    if not hasattr(clip_model, "token_embedding") or getattr(clip_model, "attn_mask", None) is None:
        return False
    return clip_model.text_pool_type == "argmax" and all(
        type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv") and b.attn.batch_first
        and b.attn.in_proj_weight is not None and b.attn.bias_k is None and not b.attn.add_zero_attn
        for b in transformer.resblocks)


def shared_prefix_length(tokens: torch.Tensor) -> int:
    """Leading tokens that every row of ``tokens`` (N, L) shares, up to (not including) the
    earliest end-of-text token."""
    same = (tokens == tokens[:1]).all(dim=0).long()
    return min(int(same.cumprod(0).sum()), int(tokens.argmax(dim=-1).min()))


def attend_after_prefix(block: nn.Module, x: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """Causal self-attention of ``block`` for tokens ``x`` (N, M, C) that follow the shared
    ``prefix`` (P, C) (both after ``ln_1``) -> (N, M, C)."""
    attn = block.attn
    n, m, c = x.shape
    p = prefix.shape[0]
    heads = attn.num_heads
    weights = attn.in_proj_weight.chunk(3)
    biases = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None,) * 3
    q, k, v = (F.linear(x, w, b) for w, b in zip(weights, biases))
    k = torch.cat([F.linear(prefix, weights[1], biases[1]).expand(n, p, c), k], dim=1)
    v = torch.cat([F.linear(prefix, weights[2], biases[2]).expand(n, p, c), v], dim=1)
    q, k, v = (t.unflatten(-1, (heads, c // heads)).transpose(1, 2) for t in (q, k, v))
    visible = torch.ones(m, p + m, dtype=torch.bool, device=x.device).tril(p)  # the prefix and earlier tokens
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
    return attn.out_proj(out.transpose(1, 2).reshape(n, m, c))


def encode_after_prefix(clip_model: nn.Module, tokens: torch.Tensor, prefix_length: int) -> torch.Tensor:
    """:func:`encode_prompts` for prompts sharing their first ``prefix_length`` tokens (a
    template's start): with causal attention the prefix's hidden states are the same in every
    prompt, so they are computed once and only the rest runs per prompt.

    Args:
        tokens: (N, L) token ids, end-of-text being the largest id of each row.
        prefix_length: P, at most the earliest end-of-text position.
    Returns:
        (N, C) text embeddings (not normalised).
    """
    length = int(tokens.argmax(dim=-1).max()) + 1
    positions = clip_model.positional_embedding
    prefix = clip_model.token_embedding(tokens[0, :prefix_length]) + positions[:prefix_length]  # (P, C)
    x = clip_model.token_embedding(tokens[:, prefix_length:length]) + positions[prefix_length:length]  # (N, M, C)
    prefix_mask = clip_model.attn_mask[:prefix_length, :prefix_length]
    for block in clip_model.transformer.resblocks:
        x = x + block.ls_1(attend_after_prefix(block, block.ln_1(x), block.ln_1(prefix)))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
        prefix = block(prefix[None], attn_mask=prefix_mask)[0]
    x = x[torch.arange(len(x), device=x.device), tokens.argmax(dim=-1) - prefix_length]
    return project_text(clip_model, clip_model.ln_final(x))


def clip_prompt_encoder(clip_model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The encoder of :func:`encode_normalised` for an open_clip model: where the text tower
    allows, the start a call's prompts share (a template's) runs once (:func:`encode_after_prefix`),
    else :func:`encode_prompts`."""
    device = clip_model.token_embedding.weight.device
    if shares_prefixes(clip_model):
        return lambda tokens: encode_after_prefix(clip_model, tokens.to(device), shared_prefix_length(tokens))
    return lambda tokens: encode_prompts(clip_model, tokens.to(device))


def encode_normalised(encode: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """(N, L) tokenised prompts -> (N, C) L2-normalised float32 embeddings.

    Prompts of the same length are encoded together, at most ``PROMPTS_PER_CALL`` per call, so
    every call's context ends at its end-of-text token with no padding.

    Args:
        encode: (n, L) token ids of prompts of one length -> (n, C) embeddings, e.g.
            :func:`clip_prompt_encoder`, or an exported text tower run by onnxruntime.
    """
    lengths = tokens.argmax(dim=-1)
    rows, encoded = [], []
    for length in lengths.unique():
        same_length = (lengths == length).nonzero().squeeze(1)
        for index in same_length.split(PROMPTS_PER_CALL):
            rows.append(index)
            encoded.append(F.normalize(encode(tokens[index]).float(), dim=-1))
    return torch.cat(encoded)[torch.cat(rows).argsort().to(encoded[0].device)]


class ClassEmbeddingCache:
    """Class embeddings of vocabularies, computed once from the current text-tower weights.

    Entries are kept in memory (keyed by the names) and on disk (keyed by a hash of the model
    name, the templates, the ensemble, the names and the text-tower weights, so other weights
    or names never hit a stale entry). Call :meth:`clear` after the weights change.
    """

    def __init__(self, *, model_name: str, templates: Sequence[str], cache_dir: str,
                 ensemble: str = "per_template", tokenizer: Optional[Callable[[List[str]], torch.Tensor]] = None):
        """
        Args:
            model_name: open_clip name of the model (its tokenizer, and part of the disk key).
            templates: prompt templates, "{}" standing for a name.
            cache_dir: folder of the disk cache ("" for memory only).
            ensemble: a key of ``PROMPT_ENSEMBLES``.
            tokenizer: prompts -> (N, L) token ids (default: open_clip's for ``model_name``).
        """
        if ensemble not in PROMPT_ENSEMBLES:
            raise ValueError(f"Unknown prompt ensemble {ensemble!r}; choose one of {sorted(PROMPT_ENSEMBLES)}")
        self.model_name = model_name
        self.templates = tuple(templates)
        self.ensemble_name = ensemble
        self.ensemble = PROMPT_ENSEMBLES[ensemble]
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else ""
        self.tokenizer = tokenizer or open_clip.get_tokenizer(model_name)
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
            return self.compute_with(clip_prompt_encoder(clip_model), names)

    def compute_with(self, encode: Callable[[torch.Tensor], torch.Tensor], names: Sequence[str]) -> torch.Tensor:
        """The embeddings of ``names``, as :meth:`get` gives them, with the prompts encoded by
        ``encode`` (see :func:`encode_normalised`; e.g. an exported text tower); not cached."""
        synonyms = [self.ensemble.split(name) for name in names]
        unique_names = list(dict.fromkeys(s for syn in synonyms for s in syn))
        # A template's prompts are encoded together: they share its start (clip_prompt_encoder).
        encoded: Dict[str, torch.Tensor] = {}
        for template in tqdm(self.templates, desc=f"Encoding {len(names)} class names", unit="template",
                             disable=len(self.templates) * len(unique_names) < 4 * PROMPTS_PER_CALL):
            prompts = [p for p in dict.fromkeys(template.format(s) for s in unique_names) if p not in encoded]
            if prompts:
                encoded.update(zip(prompts, encode_normalised(encode, self.tokenizer(prompts))))
        entries = []
        for syn in synonyms:
            embeddings = torch.stack([encoded[p] for p in self.ensemble.prompts(self.templates, syn)])
            entries.append(self.ensemble.combine(embeddings, len(self.templates), len(syn)))
        return self.ensemble.join(entries)
