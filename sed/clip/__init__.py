"""CLIP models and class text embeddings, shared by every model of the project."""
from .builder import create_clip_model, resolve_model_name, uses_quick_gelu
from .text import PROMPT_ENSEMBLES, PROMPT_TEMPLATES, ClassEmbeddingCache, encode_prompts

__all__ = ["ClassEmbeddingCache", "PROMPT_ENSEMBLES", "PROMPT_TEMPLATES", "create_clip_model",
           "encode_prompts", "resolve_model_name", "uses_quick_gelu"]
