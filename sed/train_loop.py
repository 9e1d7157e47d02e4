"""The training step (gradient accumulation and mixed precision on any device) and the
checkpoints a killed run resumes from."""
import os
import time
from contextlib import nullcontext
from typing import Optional

import torch
from detectron2.engine import SimpleTrainer

from .checkpoint import Checkpointer


class AccumulatingTrainer(SimpleTrainer):
    """detectron2's SimpleTrainer, with one optimizer step per ``accumulation_steps``
    micro-batches (losses averaged over them, so the effective batch is their sum) and
    optional autocast to ``amp_dtype`` (float16 adds a gradient scaler). Works on CPU and CUDA.
    """

    def __init__(self, model, data_loader, optimizer, *, accumulation_steps: int = 1,
                 amp_dtype: Optional[torch.dtype] = None, device_type: str = "cuda"):
        super().__init__(model, data_loader, optimizer)
        self.accumulation_steps = accumulation_steps
        self.amp_dtype = amp_dtype
        self.device_type = device_type
        self.grad_scaler = torch.amp.GradScaler(device_type) if amp_dtype == torch.float16 else None

    def run_step(self):
        assert self.model.training, "[AccumulatingTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        batches = [next(self._data_loader_iter) for _ in range(self.accumulation_steps)]
        data_time = time.perf_counter() - start

        self.optimizer.zero_grad()
        averaged = {}
        for i, data in enumerate(batches):
            last = i == len(batches) - 1
            # Under DDP, gradients are all-reduced once, after the last micro-batch.
            sync = nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()
            with sync:
                with torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss_dict = self.model(data)
                loss = sum(loss_dict.values()) / self.accumulation_steps
                (self.grad_scaler.scale(loss) if self.grad_scaler else loss).backward()
            for name, value in loss_dict.items():
                averaged[name] = averaged.get(name, 0.0) + value.detach().float() / self.accumulation_steps

        self.after_backward()
        self._write_metrics(averaged, data_time)  # raises on a non-finite loss, before the step
        if self.grad_scaler:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        state = super().state_dict()
        if self.grad_scaler:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


class ResumableCheckpointer(Checkpointer):
    """detectron2's checkpointer, with its ``last_checkpoint`` tag (the file a resumed run
    starts from) replaced whole: written next to it, then renamed over it. fvcore writes the
    tag in place, so a run killed at that moment left it empty, and ``--resume`` then failed.
    A kill now leaves the previous tag, which names a complete checkpoint (each checkpoint is
    written before it is tagged)."""

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        temporary = f"{path}.tmp{os.getpid()}"
        with open(temporary, "w") as f:
            f.write(last_filename_basename)
        os.replace(temporary, path)  # (iopath's mv would refuse an existing destination)
