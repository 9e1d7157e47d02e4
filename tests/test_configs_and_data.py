"""Vocabulary files, dataset registration, optimizer groups and the synthetic dataset."""
import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from helpers import ROOT, SHARED, make_cfg, tiny_model
from sed.data import synthetic
from sed.data.datasets import DATASETS
from sed.resources import vocabulary_path
from sed.solver import build_optimizer


@pytest.mark.parametrize("name", ["ade150", "ade847", "coco", "pc59", "pc459", "voc20", "voc20b"])
def test_vocabularies_match_the_published_ones(name):
    reference = SHARED / "reference" / "class_names" / f"{name}.json"
    if not reference.is_file():
        pytest.skip(f"../shared is absent ({reference} not found)")
    ours = vocabulary_path(f"{name}.json").read_bytes()
    assert json.loads(ours) == json.loads(reference.read_bytes())


def test_every_dataset_is_registered_with_metadata():
    expected_classes = {"ade20k_full_sem_seg_freq_val_all": 847, "context_459_test_sem_seg": 459,
                        "voc_2012_test_background_sem_seg": 21, "coco_2017_train_stuff_all_sem_seg": 171}
    for spec in DATASETS:
        meta = MetadataCatalog.get(spec.name)
        assert meta.evaluator_type == spec.evaluator_type and meta.ignore_label == spec.ignore_label
        if spec.name in expected_classes:
            assert len(meta.stuff_classes) == expected_classes[spec.name]


def test_missing_dataset_names_path_and_prepare_command(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ADEChallengeData2016/images/validation.*prepare_ade20k_150\.py"):
        DatasetCatalog.get("ade20k_150_test_sem_seg")


def test_synthetic_dataset_layout(synthetic_root):
    assert json.loads(vocabulary_path("synthetic.json").read_text()) == synthetic.class_names()
    label_dir = synthetic_root / "sed_synthetic" / "annotations_detectron2" / "train"
    labels = [np.array(Image.open(p)) for p in sorted(label_dir.glob("*.png"))]
    assert labels and all(label.dtype == np.uint8 and label.ndim == 2 for label in labels)
    values = np.unique(np.concatenate([label.ravel() for label in labels]))
    assert set(values) <= {0, 1, 2, 3, 4, 255} and 255 in values and len(values) >= 4


def test_synthetic_shapes_cover_the_same_area():
    """Every shape kind covers a circle's area of the same radius draw, so no class is rare (the
    star, at 42% of the circle's area, was the class the quick start failed to learn)."""
    areas = {kind: np.mean([synthetic._shape_mask(kind, np.random.default_rng(seed), 128).sum() for seed in range(200)])
             for kind in ("circle", "square", "triangle", "star")}
    assert max(areas.values()) / min(areas.values()) < 1.1, areas


def test_optimizer_groups_follow_the_recipe():
    model = tiny_model()
    cfg = make_cfg("SOLVER.BASE_LR", "0.0002", "SOLVER.WEIGHT_DECAY", "0.0001", "SOLVER.CLIP_MULTIPLIER", "0.01",
                   config_file=ROOT / "configs" / "convnextB_768.yaml")
    optimizer = build_optimizer(cfg, model)
    setting = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert {id(p) for n, p in named.items() if p.requires_grad} == set(setting)
    assert setting[id(named["encoder.clip.visual.trunk.stem.0.weight"])] == (pytest.approx(2e-6), 1e-4)
    assert setting[id(named["encoder.clip.visual.trunk.stem.1.weight"])] == (pytest.approx(2e-6), 0.0)
    assert setting[id(named["decoder.stages.0.spatial.dwconv.weight"])] == (2e-4, 1e-4)
    assert setting[id(named["decoder.stages.0.spatial.norm.weight"])] == (2e-4, 0.0)
    assert setting[id(named["decoder.stages.0.fuse.1.weight"])] == (2e-4, 0.0)
    assert id(named["encoder.clip.token_embedding.weight"]) not in setting
    # Full-model clipping: one step never moves with a gradient norm above CLIP_VALUE.
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0) if p.requires_grad else None
    optimizer.step()
    total = torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert total.item() == pytest.approx(cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE, rel=1e-4)
