"""Training machinery: accumulation, NaN losses, config errors, distributed CPU training,
and one step of the training loop on the released-format fixture."""
import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.engine import SimpleTrainer, default_argument_parser

from helpers import (FAST, ROOT, SED_FIXTURE, build_sed_fixture, kill_after_first_checkpoint, require_sed_fixture, sh,
                     tiny_model, train_net)
from sed.engine import Trainer, setup
from sed.train_loop import AccumulatingTrainer, ResumableCheckpointer


def batches(n, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8),
             "sem_seg": torch.randint(0, 5, (size, size), generator=g)} for _ in range(n)]


def gradients_after_one_step(trainer_cls, loader, **kwargs):
    model = tiny_model(seed=1).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    trainer = trainer_cls(model, loader, optimizer, **kwargs)
    trainer.iter = 0
    from detectron2.utils.events import EventStorage

    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.run_step()
        losses = {k: v.latest() for k, v in storage.histories().items() if k.startswith("loss")}
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, losses


def test_gradient_accumulation_equals_the_full_batch():
    data = batches(4)
    full, full_losses = gradients_after_one_step(SimpleTrainer, iter([data]))
    accumulated, acc_losses = gradients_after_one_step(AccumulatingTrainer, iter([data[:2], data[2:]]),
                                                       accumulation_steps=2, device_type="cpu")
    assert full.keys() == accumulated.keys() and len(full) > 100
    for name in full:
        assert torch.allclose(full[name], accumulated[name], atol=1e-6, rtol=1e-4), name
    for name in full_losses:
        assert acc_losses[name] == pytest.approx(full_losses[name], rel=1e-5)


def test_bfloat16_autocast_step_runs_on_cpu():
    grads, losses = gradients_after_one_step(AccumulatingTrainer, iter([batches(2)]), amp_dtype=torch.bfloat16,
                                             device_type="cpu")
    assert all(torch.isfinite(g).all() for g in grads.values()) and losses


def test_unknown_config_key_is_named(tmp_path, env_with_datasets):
    result = train_net("OUTPUT_DIR", str(tmp_path), *FAST, "MODEL.SEM_SEG_HEAD.POOLING_SIZE", "[1,1]",
                       env=env_with_datasets)
    assert result.returncode != 0
    assert ("MODEL.SEM_SEG_HEAD.POOLING_SIZE is not a config key; did you mean MODEL.SEM_SEG_HEAD.POOLING_SIZES"
            in result.stderr)


def test_vocabulary_of_the_wrong_length_fails_early(tmp_path, env_with_datasets):
    result = train_net("OUTPUT_DIR", str(tmp_path), *FAST, "MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", "datasets/voc20.json",
                       env=env_with_datasets)
    assert result.returncode != 0
    assert "datasets/voc20.json has 20 classes but dataset 'sed_synthetic_train' has 5" in result.stderr


def test_nan_loss_stops_with_iteration_and_keeps_last_good_checkpoint(tmp_path, synthetic_root, monkeypatch):
    from sed.modeling import SED

    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_root))
    monkeypatch.chdir(ROOT)  # the config names files relative to the repository
    args = default_argument_parser().parse_args(
        ["--config-file", str(ROOT / "configs" / "synthetic_tiny.yaml"), "OUTPUT_DIR", str(tmp_path), *FAST,
         "SOLVER.MAX_ITER", "10", "SOLVER.CHECKPOINT_PERIOD", "2", "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", ""])
    cfg = setup(args)
    forward = SED.forward
    calls = {"n": 0}

    def forward_with_nan(self, batched_inputs):
        losses = forward(self, batched_inputs)
        calls["n"] += 1
        if self.training and calls["n"] == 4:
            losses["loss_sem_seg_0"] = losses["loss_sem_seg_0"] * float("nan")
        return losses

    monkeypatch.setattr(SED, "forward", forward_with_nan)
    trainer = Trainer(cfg)
    with pytest.raises(FloatingPointError, match=r"(?s)iteration=3.*loss_sem_seg_0"):
        trainer.train()
    assert not (tmp_path / "model_final.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    state = torch.load(tmp_path / "model_0000001.pth", weights_only=False)
    assert state["iteration"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_two_cpu_processes_train_and_evaluate(tmp_path, env_with_datasets):
    out = tmp_path / "out"
    result = sh("run.sh", "configs/synthetic_tiny.yaml", "2", str(out), *FAST, env=env_with_datasets)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "World size: 2" in result.stdout + result.stderr
    assert (out / "model_final.pth").is_file()
    assert "mIoU" in json.loads((out / "results.json").read_text())["sed_synthetic_val"]["sem_seg"]


def test_one_training_step_on_the_fixture_batch(monkeypatch):
    require_sed_fixture()
    cases = torch.load(SED_FIXTURE / "cases.pt", weights_only=True)["train"]
    model = build_sed_fixture("[2,2]").train()
    loader = iter([[{"image": i, "sem_seg": t} for i, t in zip(cases["images"], cases["targets"])]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    trainer = AccumulatingTrainer(model, loader, optimizer, device_type="cpu")
    from detectron2.utils.events import EventStorage

    with EventStorage(0) as storage:
        trainer.storage, trainer.iter = storage, 0
        trainer.run_step()
        for name, expected in cases["losses"].items():
            assert storage.history(name).latest() == pytest.approx(expected, rel=1e-5)


def test_resumed_loader_continues_the_image_stream(synthetic_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synthetic_root))
    monkeypatch.chdir(ROOT)
    args = default_argument_parser().parse_args(
        ["--config-file", "configs/synthetic_tiny.yaml", "OUTPUT_DIR", "/tmp/unused", *FAST, "SEED", "3",
         "SOLVER.IMS_PER_BATCH", "2"])
    cfg = setup(args)

    def files(loader, n):
        stream = iter(loader)
        return [[d["file_name"] for d in next(stream)] for _ in range(n)]

    uninterrupted = files(Trainer.build_train_loader(cfg), 6)
    resumed = files(Trainer.build_train_loader(cfg, start_iter=3), 3)
    assert resumed == uninterrupted[3:]
    assert len({f for batch in uninterrupted for f in batch}) > 4


@pytest.mark.slow
def test_killed_run_resumes_to_the_end(tmp_path, env_with_datasets):
    out = tmp_path / "out"
    args = ["sh", "run.sh", "configs/synthetic_tiny.yaml", "0", str(out), *FAST, "SOLVER.MAX_ITER", "60",
            "SOLVER.CHECKPOINT_PERIOD", "4", "TEST.EVAL_PERIOD", "0"]
    start = kill_after_first_checkpoint(args, out, env_with_datasets)
    assert (out / "model_0000003.pth").exists()
    result = subprocess.run(args, cwd=ROOT, env=env_with_datasets, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Starting training from iteration {start}" in result.stdout + result.stderr
    assert (out / "model_final.pth").is_file()
    assert start < 60 and torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 59


def test_checkpoint_tag_is_replaced_whole(tmp_path, monkeypatch):
    """Each checkpoint replaces the tag; a run killed while it tags its newest checkpoint keeps
    the previous tag (fvcore's write in place left an empty ``last_checkpoint``, from which
    ``--resume`` failed)."""
    checkpointer = ResumableCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    for name in ("model_0000001", "model_0000003"):
        checkpointer.save(name)
        assert checkpointer.get_checkpoint_file() == str(tmp_path / f"{name}.pth")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process ends before the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000007")
    assert (tmp_path / "model_0000007.pth").is_file()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
