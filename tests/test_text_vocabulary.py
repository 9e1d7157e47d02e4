"""Class embeddings: prompt ensembling, context truncation, and the caches."""
import os
import re
import subprocess
import sys

import open_clip
import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, pretrain_tiny_clip, tiny_model
from sed.clip import text
from sed.clip.builder import create_clip_model
from sed.clip.text import (PROMPT_TEMPLATES, ClassEmbeddingCache, clip_prompt_encoder, encode_after_prefix,
                           encode_normalised, encode_prompts, shared_prefix_length, shares_prefixes)


def test_truncated_context_equals_full_context():
    clip = tiny_model().encoder.clip
    tokenizer = open_clip.get_tokenizer("sed_tiny")
    tokens = tokenizer(["a photo of a dog.", "a bad photo of the yellow star in the scene.", "sky"])
    assert torch.allclose(encode_prompts(clip, tokens), clip.encode_text(tokens), atol=1e-5)


def test_a_shared_prefix_runs_once_with_the_same_embeddings(monkeypatch):
    """A template's prompts share their start: encoding it once gives the full-context
    embeddings (ResNet CLIP's text tower here, ViT's in the test above's model)."""
    torch.manual_seed(0)
    clip = create_clip_model(str(ROOT / "sed" / "model_configs" / "eov_tiny_rn.json"), "").eval()
    assert shares_prefixes(clip)
    tokenizer = open_clip.get_tokenizer("RN50")
    tokens = tokenizer(["There is a small dog in the scene.", "There is a small traffic light in the scene.",
                        "There is a small sky"])
    assert shared_prefix_length(tokens) == 5  # start-of-text + "there is a small"
    with torch.no_grad():
        full = clip.encode_text(tokens)
        assert torch.allclose(encode_after_prefix(clip, tokens, 5), full, atol=1e-5)
        assert torch.allclose(encode_after_prefix(clip, tokens, 1), full, atol=1e-5)
        # Mixed templates and lengths, in calls of one length, back in the given order.
        mixed = tokenizer([t.format(n) for t in PROMPT_TEMPLATES["vild"][:3] for n in ("cat", "fire hydrant", "sky")])
        assert torch.allclose(encode_normalised(clip_prompt_encoder(clip), mixed),
                              F.normalize(clip.encode_text(mixed), dim=-1), atol=1e-5)
    # One name per template and class: the cache's order is the ensemble's, whatever the grouping.
    cache = ClassEmbeddingCache(model_name="RN50", templates=PROMPT_TEMPLATES["vild"][:3], cache_dir="",
                                ensemble="per_name")
    names = cache.compute(clip, ["cat,kitty", "sky"])
    with torch.no_grad():
        kitty = F.normalize(clip.encode_text(tokenizer([t.format("kitty") for t in PROMPT_TEMPLATES["vild"][:3]])), dim=-1)
    assert names.shape == (3, 32) and torch.allclose(names[1], F.normalize(kitty.mean(0), dim=-1), atol=1e-5)
    # Each call holds prompts of one length (no padding), their shared start cut off.
    calls = []
    monkeypatch.setattr(text, "encode_after_prefix",
                        lambda clip, tokens, prefix: calls.append((tokens, prefix)) or torch.ones(len(tokens), 32))
    encode_normalised(clip_prompt_encoder(clip),
                      tokenizer(["There is a small dog", "There is a small fire hydrant", "There is a small cat"]))
    assert [(t.argmax(dim=-1).tolist(), p) for t, p in calls] == [([6, 6], 5), ([8], 8)]


def test_synonyms_are_averaged_per_template():
    clip = tiny_model().encoder.clip
    cache = ClassEmbeddingCache(model_name="sed_tiny", templates=["a {}.", "the {}"], cache_dir="")
    both, dog, puppy = cache.compute(clip, ["dog, puppy"])[0], *cache.compute(clip, ["dog", "puppy"])
    assert both.shape == (2, 32)
    assert torch.allclose(both, F.normalize(dog + puppy, dim=-1), atol=1e-6)


def test_disk_cache_is_keyed_by_names_and_weights(tmp_path):
    model = tiny_model()
    clip = model.encoder.clip
    cache = ClassEmbeddingCache(model_name="sed_tiny", templates=["a {}."], cache_dir=str(tmp_path))
    first = cache.get(clip, ["cat", "sky"])
    assert len(os.listdir(tmp_path)) == 1
    fresh = ClassEmbeddingCache(model_name="sed_tiny", templates=["a {}."], cache_dir=str(tmp_path))
    fresh.compute = None  # a hit must not encode again
    assert torch.equal(fresh.get(clip, ["cat", "sky"]), first)
    cache.get(clip, ["cat", "road"])
    assert len(os.listdir(tmp_path)) == 2
    with torch.no_grad():
        clip.token_embedding.weight.add_(0.5)
    changed = ClassEmbeddingCache(model_name="sed_tiny", templates=["a {}."], cache_dir=str(tmp_path))
    assert not torch.allclose(changed.get(clip, ["cat", "sky"]), first)
    assert len(os.listdir(tmp_path)) == 3


def test_loading_weights_refreshes_the_embeddings():
    model = tiny_model()
    before = model.text_embeddings(["cat"]).clone()
    state = model.state_dict()
    state["encoder.clip.token_embedding.weight"] = state["encoder.clip.token_embedding.weight"] + 1.0
    model.load_state_dict(state)
    assert not torch.allclose(model.text_embeddings(["cat"]), before)


def test_embeddings_ignore_autocast():
    """Embeddings are cached and shared by every precision: they are always encoded in float32."""
    clip = tiny_model().encoder.clip
    cache = ClassEmbeddingCache(model_name="sed_tiny", templates=["a {}.", "the {}"], cache_dir="")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = cache.compute(clip, ["cat", "sky"])
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, cache.compute(clip, ["cat", "sky"]))


@pytest.mark.slow
def test_pretrain_tiny_clip_separates_and_aligns_the_classes(tmp_path, env_with_datasets):
    """tools/pretrain_tiny_clip.py: the tiny default's random text tower maps the shapes' names
    to nearly one direction and its random image tower puts few pixels nearest to their own
    class's name; afterwards the names are far apart and every class's pixels are nearest to
    it. The same seed writes the same weights, and the file loads as
    MODEL.ENC.CLIP_PRETRAINED_WEIGHTS."""
    outputs = [tmp_path / "a.pt", tmp_path / "b.pt"]
    args = ("--text-steps", "60", "--image-steps", "60", "--min-accuracy", "0.6")
    for out in outputs:
        result = pretrain_tiny_clip(out, *args, env=env_with_datasets)
        assert result.returncode == 0, result.stderr[-2000:]
    before, after = map(float, re.search(r"two classes (-?[0-9.]+) -> (-?[0-9.]+)", result.stdout).groups())
    assert before > 0.8 and after < 0.5
    accuracies = re.findall(r"([a-z ]+) ([0-9.]+) -> ([0-9.]+)", result.stdout.split("their class's name:")[1])
    assert len(accuracies) == 5
    assert all(float(a) >= 0.6 for _, _, a in accuracies), accuracies
    assert min(float(b) for _, b, _ in accuracies[1:]) < 0.2, accuracies  # the shapes, before
    first, second = (torch.load(out, weights_only=True) for out in outputs)
    assert all(torch.equal(first[k], second[k]) for k in first)

    torch.manual_seed(0)
    random_init = create_clip_model(os.path.join(ROOT, "sed/model_configs/sed_tiny.json"), "").state_dict()
    loaded = create_clip_model(os.path.join(ROOT, "sed/model_configs/sed_tiny.json"), str(outputs[0])).state_dict()
    assert all(torch.equal(value, first[name]) for name, value in loaded.items())
    for name in ("token_embedding.weight", "visual.head.proj.weight", "visual.trunk.stem.0.weight"):
        assert not torch.equal(loaded[name], random_init[name]), name


@pytest.mark.slow
def test_pretrain_tiny_clip_checks_both_towers_and_writes_nothing_when_short(tmp_path, env_with_datasets):
    """A text tower not spread enough, or a class whose pixels are not nearest to its name by
    --max-image-steps, stops the tool with the option to raise; no file is written."""
    out = tmp_path / "clip.pt"
    unspread = pretrain_tiny_clip(out, "--text-steps", "0", env=env_with_datasets)
    assert unspread.returncode == 1 and "raise --text-steps" in unspread.stderr, unspread.stderr[-2000:]
    short = pretrain_tiny_clip(out, "--text-steps", "30", "--image-steps", "2", "--max-image-steps", "4", "--min-accuracy", "0.99",
                     env=env_with_datasets)
    assert short.returncode == 1 and "raise --max-image-steps" in short.stderr, short.stderr[-2000:]
    assert "after 4 steps" in short.stderr and "yellow star" in short.stderr
    assert not out.exists() and not list(tmp_path.glob("clip.pt*"))
