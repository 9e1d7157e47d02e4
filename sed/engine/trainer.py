"""The project's detectron2 trainer: gradient accumulation and mixed precision on any device,
checkpoints and data a killed run resumes from, and evaluation that resumes too."""
import os
import weakref
from collections import OrderedDict
from typing import Dict

import torch
from detectron2.config import CfgNode
from detectron2.data import (DatasetMapper, build_detection_test_loader, build_detection_train_loader,
                             get_detection_dataset_dicts)
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset, print_csv_format
from detectron2.utils import comm
from torch import nn

from ..config import AMP_DTYPES
from ..data.evaluation import build_evaluators
from ..data.mapper import build_mapper
from ..data.resumable_evaluation import ResumableEvaluator
from ..data.sampler import ResumableTrainingSampler
from ..solver import build_optimizer
from ..train_loop import AccumulatingTrainer, ResumableCheckpointer
from .results import report


def distributed_model(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several processes (detectron2's
    ``create_ddp_model``), at this process's GPU; a CPU model (gloo processes) is given no
    ``device_ids``, which DistributedDataParallel refuses for a module on the CPU."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    return create_ddp_model(model, broadcast_buffers=False,
                            device_ids=None if on_cpu else [comm.get_local_rank()])


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer (its hooks, scheduler, ``resume_or_load``, ``train``) with the
    project's training step (:class:`~sed.train_loop.AccumulatingTrainer`), checkpointer
    (:class:`~sed.train_loop.ResumableCheckpointer`), resumable train loader, optimizer and
    evaluation."""

    def __init__(self, cfg: CfgNode):
        # DefaultTrainer's construction, in its order, with the project's pieces: its own
        # __init__ would build a SimpleTrainer/AMPTrainer and a DDP model through detectron2's
        # create_ddp_model, which gives even CPU processes device_ids.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = distributed_model(model)
        self._trainer = AccumulatingTrainer(
            model, data_loader, optimizer,
            accumulation_steps=cfg.SOLVER.GRAD_ACCUM_STEPS,
            amp_dtype=AMP_DTYPES[cfg.SOLVER.AMP.PRECISION] if cfg.SOLVER.AMP.ENABLED else None,
            device_type=torch.device(cfg.MODEL.DEVICE).type,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # Checkpoints, with logs and statistics, in OUTPUT_DIR; the periodic-checkpoint hook
        # and resume_or_load use this one.
        self.checkpointer = ResumableCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:  # continue the image stream where the checkpointed run was
            self._trainer.reset_data_loader(lambda: self.build_train_loader(self.cfg, self.start_iter))

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, start_iter: int = 0):
        """Loader of micro-batches (lists of IMS_PER_BATCH / GRAD_ACCUM_STEPS / processes dataset
        dicts), past the images of the first ``start_iter`` iterations. The shuffle is seeded
        with SEED when it is set, so a resumed run reads the images an uninterrupted one would."""
        dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN)
        sampler = ResumableTrainingSampler(
            len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None,
            skip=start_iter * cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size())
        return build_detection_train_loader(
            dataset=dataset,
            mapper=build_mapper(cfg),
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH // cfg.SOLVER.GRAD_ACCUM_STEPS,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module) -> Dict:
        """Evaluates ``model`` on each of DATASETS.TEST (predictions and partial state in
        OUTPUT_DIR/inference/DATASET), writes the results (:func:`~sed.engine.results.report`)
        and returns them (dataset -> task -> metric -> value), for one dataset unnested, as
        detectron2 does. With TEST.PARTIAL_EVERY > 0 an evaluation that was killed resumes after
        the images it saved (:class:`~sed.data.resumable_evaluation.ResumableEvaluator`)."""
        results, resumable = OrderedDict(), []
        for name in cfg.DATASETS.TEST:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            evaluators = build_evaluators(cfg, name, output_folder)
            dataset = get_detection_dataset_dicts([name], filter_empty=False)
            if cfg.TEST.PARTIAL_EVERY > 0:
                evaluator = ResumableEvaluator(
                    evaluators, folder=os.path.join(output_folder, "partial"), cfg=cfg, dataset_name=name,
                    dataset=dataset, model=model, every=cfg.TEST.PARTIAL_EVERY, keep=cfg.TEST.KEEP_PARTIAL)
                dataset = evaluator.remaining(dataset)
                resumable.append(evaluator)
            else:
                evaluator = DatasetEvaluators(evaluators)
            loader = build_detection_test_loader(dataset, mapper=DatasetMapper(cfg, is_train=False),
                                                 num_workers=cfg.DATALOADER.NUM_WORKERS) if dataset else []
            results[name] = inference_on_dataset(model, loader, evaluator)
            if comm.is_main_process():
                print_csv_format(results[name])
        report(cfg, results)
        for evaluator in resumable:  # the results are on disk: the partial state has served
            evaluator.finish()
        return next(iter(results.values())) if len(results) == 1 else results

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)
