"""Train and evaluate the project's models (SED, EOV-Seg) with detectron2; the config picks the model.

    python train_net.py --config-file configs/convnextB_768.yaml --num-gpus 4 OUTPUT_DIR output/
    python train_net.py --config-file configs/convnextB_768.yaml --eval-only MODEL.WEIGHTS model.pth

``run.sh`` and ``eval.sh`` wrap these commands.
"""
import json
import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, defaults, launch
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from sed import add_project_config
from sed.config import AMP_DTYPES
from sed.data.evaluation import SEDSemSegEvaluator
from sed.data.mapper import MAPPER_REGISTRY
from sed.data.sampler import ResumableTrainingSampler
from sed.vocabulary import load_class_names
from sed.solver import build_optimizer
from sed.train_loop import AccumulatingTrainer

logger = logging.getLogger("sed")


def create_ddp_model(model, **kwargs):
    """detectron2's ``create_ddp_model``, also for CPU processes (gloo), where
    DistributedDataParallel must not be given ``device_ids``."""
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs["device_ids"] = None
    return _create_ddp_model(model, **kwargs)


_create_ddp_model = defaults.create_ddp_model
defaults.create_ddp_model = create_ddp_model  # DefaultTrainer builds its DDP model through it


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        base = self._trainer
        self._trainer = AccumulatingTrainer(
            base.model, base.data_loader, base.optimizer,
            accumulation_steps=cfg.SOLVER.GRAD_ACCUM_STEPS,
            amp_dtype=AMP_DTYPES[cfg.SOLVER.AMP.PRECISION] if cfg.SOLVER.AMP.ENABLED else None,
            device_type=torch.device(cfg.MODEL.DEVICE).type,
        )

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:  # continue the image stream where the checkpointed run was
            self._trainer.reset_data_loader(lambda: self.build_train_loader(self.cfg, self.start_iter))

    @classmethod
    def build_train_loader(cls, cfg, start_iter: int = 0):
        """Loader of micro-batches (IMS_PER_BATCH / GRAD_ACCUM_STEPS images each), past the
        images of the first ``start_iter`` iterations. The shuffle is seeded with SEED when
        it is set, so a resumed run reads the images an uninterrupted one would."""
        dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN)
        sampler = ResumableTrainingSampler(
            len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None,
            skip=start_iter * cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size())
        return build_detection_train_loader(
            dataset=dataset,
            mapper=MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)(cfg),
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH // cfg.SOLVER.GRAD_ACCUM_STEPS,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return DatasetEvaluators([SEDSemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)])

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)


def check_solver(cfg) -> None:
    solver = cfg.SOLVER
    steps, world = solver.GRAD_ACCUM_STEPS, comm.get_world_size()
    if steps < 1 or solver.IMS_PER_BATCH % (steps * world):
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({solver.IMS_PER_BATCH}) must be a multiple of "
                         f"SOLVER.GRAD_ACCUM_STEPS ({steps}) x processes ({world})")
    if solver.AMP.PRECISION not in AMP_DTYPES:
        raise ValueError(f"SOLVER.AMP.PRECISION={solver.AMP.PRECISION!r}; choose one of {sorted(AMP_DTYPES)}")


def check_sed_vocabularies(cfg) -> None:
    """Each dataset's classes must match the vocabulary SED uses for it."""
    head = cfg.MODEL.SEM_SEG_HEAD
    pairs = [(d, head.TRAIN_CLASS_JSON) for d in cfg.DATASETS.TRAIN]
    pairs += [(d, head.TEST_CLASS_JSON) for d in cfg.DATASETS.TEST]
    for dataset, vocabulary in pairs:
        expected = load_class_names(MetadataCatalog.get(dataset).vocabulary)
        given = load_class_names(vocabulary)
        if len(given) != len(expected):
            raise ValueError(
                f"{vocabulary} has {len(given)} classes but dataset '{dataset}' has {len(expected)} "
                f"(its vocabulary is {MetadataCatalog.get(dataset).vocabulary})"
            )


# Checks run before training or evaluation, by meta-architecture (EOV-Seg checks its
# vocabularies when the model is built).
CONFIG_CHECKS = {"SED": check_sed_vocabularies}


def format_results(results) -> str:
    """Summary (mIoU, fwIoU, mACC, pACC) and per-class IoU/accuracy tables of each dataset."""
    tables = []
    for dataset, res in results.items():
        m = res["sem_seg"]
        tables.append(f"Results on {dataset}:\n" + tabulate(
            [[m["mIoU"], m["fwIoU"], m["mACC"], m["pACC"]]],
            headers=["mIoU", "fwIoU", "mACC", "pACC"], floatfmt=".2f", tablefmt="pipe"))
        rows = [[k[4:], v, m.get("ACC-" + k[4:])] for k, v in m.items() if k.startswith("IoU-")]
        tables.append(tabulate(rows, headers=["class", "IoU", "ACC"], floatfmt=".2f", tablefmt="pipe",
                               missingval="-"))
    return "\n\n".join(tables)


def report(cfg, results) -> None:
    """Log the result tables and write them to OUTPUT_DIR/results.json (main process)."""
    if not comm.is_main_process() or not results:
        return
    results = results if all(isinstance(v, dict) and "sem_seg" in v for v in results.values()) \
        else {cfg.DATASETS.TEST[0]: results}
    logger.info("Evaluation results\n%s", format_results(results))
    with open(os.path.join(cfg.OUTPUT_DIR, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


def setup(args):
    cfg = get_cfg()
    add_project_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sed")
    CONFIG_CHECKS.get(cfg.MODEL.META_ARCHITECTURE, lambda cfg: None)(cfg)
    check_solver(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        # Set by the final evaluation of DefaultTrainer's EvalHook (TEST.EVAL_PERIOD > 0).
        results = getattr(trainer, "_last_eval_results", None)
    report(cfg, results)
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
