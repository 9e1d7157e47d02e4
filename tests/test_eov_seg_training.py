"""EOV-Seg training and evaluation through train_net.py: the large-scale-jitter mapper, the
optimizer's groups, config checks, a killed run resumed, and the panoptic evaluation."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from torch import nn

from helpers import ROOT, eov_cfg, eov_tiny_model, kill_after_first_checkpoint, train_net
from sed.data.mapper import PanopticLSJMapper
from sed.resources import vocabulary_path
from sed.solver import build_optimizer

CONFIG = "configs/eov_seg/synthetic_tiny.yaml"
FAST = ["SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "4", "SOLVER.IMS_PER_BATCH", "2",
        "INPUT.IMAGE_SIZE", "96", "INPUT.MIN_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.EOV_SEG.TEXT_CACHE_DIR", ""]


def test_lsj_mapper_gives_fixed_size_crops_without_crowd(panoptic_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(panoptic_root))
    dicts = DatasetCatalog.get("eov_synthetic_panoptic_train")
    cfg = eov_cfg("INPUT.IMAGE_SIZE", "64", "INPUT.MIN_SCALE", "0.2", "INPUT.MAX_SCALE", "2.0", config_file=ROOT / CONFIG)
    mapper = PanopticLSJMapper(cfg)
    crowd = dict(dicts[0], segments_info=[dict(s, iscrowd=int(i == 0)) for i, s in enumerate(dicts[0]["segments_info"])])
    np.random.seed(0)
    for d in [crowd, *dicts[1:6]]:
        out = mapper(d)
        instances = out["instances"]
        assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.uint8
        assert instances.gt_masks.shape == (len(instances), 64, 64) and instances.gt_masks.dtype == torch.bool
        kept = [s for s in d["segments_info"] if not s["iscrowd"]]
        assert instances.gt_classes.tolist() == [s["category_id"] for s in kept]
        assert not (instances.gt_masks.sum(0) > 1).any()  # panoptic: masks never overlap
    assert len(mapper(crowd)["instances"]) == len(crowd["segments_info"]) - 1


def test_optimizer_groups_follow_the_recipe():
    """AdamW; no weight decay on norm layers and embeddings; 0.05 elsewhere, including the
    channel LayerNorm of the ViT up-sampling (not a torch norm layer, as in the recipe);
    frozen CLIP parameters are not optimised."""
    model = eov_tiny_model(vocabulary_path("eov_synthetic.json"), vocabulary_path("eov_synthetic.json"))
    cfg = eov_cfg(config_file=ROOT / CONFIG)
    optimizer = build_optimizer(cfg, model)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert isinstance(optimizer, torch.optim.AdamW)
    assert len(decay) == sum(p.requires_grad for p in model.parameters())
    assert decay[id(params["light_weight_decoder.object_kernels.weight"])] == 0.0
    assert decay[id(params["void_embedding.weight"])] == 0.0
    assert decay[id(params["light_weight_decoder.mask_heads.0.ffn_norm.weight"])] == 0.0
    assert decay[id(params["lite_aggr.deconv.deform_conv1.dcn_bn.weight"])] == 0.0
    assert decay[id(params["light_weight_decoder.output_upscaling.1.weight"])] == 0.05
    assert decay[id(params["light_weight_decoder.mask_heads.0.fc_mask.weight"])] == 0.05
    assert not any(isinstance(m, nn.Embedding) and id(m.weight) in decay and decay[id(m.weight)] != 0.0
                   for m in model.modules())


def test_semantic_benchmark_needs_the_semantic_output(tmp_path, panoptic_root):
    env = dict(os.environ, DETECTRON2_DATASETS=str(panoptic_root), HOME=str(tmp_path))
    result = train_net("--eval-only", "OUTPUT_DIR", str(tmp_path), *FAST, "DATASETS.TEST", "('openvocab_ade20k_sem_seg_val',)",
                       "MODEL.EOV_SEG.TEST.SEMANTIC_ON", "False", env=env, config=CONFIG, timeout=900)
    assert result.returncode != 0
    assert "set MODEL.EOV_SEG.TEST.SEMANTIC_ON True" in result.stderr


@pytest.mark.slow
def test_killed_run_resumes_to_the_end_and_reports_pq(tmp_path, panoptic_root):
    env = dict(os.environ, DETECTRON2_DATASETS=str(panoptic_root), HOME=str(tmp_path))
    out = tmp_path / "out"
    args = ["sh", "run.sh", CONFIG, "0", str(out), *FAST, "SOLVER.MAX_ITER", "8", "TEST.EVAL_PERIOD", "0"]
    start = kill_after_first_checkpoint(args, out, env)
    assert (out / "model_0000001.pth").exists()
    result = subprocess.run(args[:-2] + ["TEST.EVAL_PERIOD", "8"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"Starting training from iteration {start}" in log
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 7
    assert "panoptic_seg results on eov_synthetic_panoptic_val" in log and "| Things" in log
    assert "sem_seg results on eov_synthetic_panoptic_val" in log


@pytest.mark.slow
def test_training_is_deterministic_given_the_seed(tmp_path, panoptic_root):
    env = dict(os.environ, DETECTRON2_DATASETS=str(panoptic_root), HOME=str(tmp_path))
    losses = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = train_net("OUTPUT_DIR", str(out), *FAST, "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()",
                           "SEED", "7", "DATALOADER.NUM_WORKERS", "1", env=env, config=CONFIG, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
        losses.append([{k: v for k, v in m.items() if "loss" in k} for m in metrics])
    assert losses[0] == losses[1] and len(losses[0]) >= 1 and losses[0][0]
