"""Train and evaluate the project's models (SED, EOV-Seg) with detectron2; the config picks the model.

    python train_net.py --config-file configs/convnextB_768.yaml --num-gpus 4 OUTPUT_DIR output/
    python train_net.py --config-file configs/convnextB_768.yaml --eval-only MODEL.WEIGHTS model.pth

``run.sh`` and ``eval.sh`` wrap these commands.
"""
import json
import logging
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Set

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import (DatasetMapper, MetadataCatalog, build_detection_test_loader, build_detection_train_loader,
                             get_detection_dataset_dicts)
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, defaults
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from sed import add_project_config
from sed.config import AMP_DTYPES
from sed.cpu_memory import configure_cpu_memory
from sed.data.custom import CustomDatasetError, CustomSplit, resolve_custom_datasets
from sed.data.evaluation import build_evaluators
from sed.data.mapper import build_mapper
from sed.data.resumable_evaluation import ResumableEvaluator
from sed.data.sampler import ResumableTrainingSampler
from sed.launch import launch
from sed.vocabulary import load_class_names
from sed.solver import build_optimizer
from sed.train_loop import AccumulatingTrainer, ResumableCheckpointer

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

    def build_hooks(self):
        # Called once, by DefaultTrainer's constructor, before the periodic-checkpoint hook
        # takes the checkpointer: that hook and resume_or_load use this one.
        self.checkpointer = ResumableCheckpointer(self.checkpointer.model, self.checkpointer.save_dir,
                                                  **self.checkpointer.checkpointables)
        return super().build_hooks()

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
            mapper=build_mapper(cfg),
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH // cfg.SOLVER.GRAD_ACCUM_STEPS,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def test(cls, cfg, model):
        """Evaluates ``model`` on each of DATASETS.TEST (predictions and partial state in
        OUTPUT_DIR/inference/DATASET), writes the results (``report``) and returns them, for one
        dataset unnested, as detectron2 does. With TEST.PARTIAL_EVERY > 0 an evaluation that
        was killed resumes after the images it saved (``ResumableEvaluator``)."""
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


def check_eov_seg_outputs(cfg) -> None:
    """Each test dataset's evaluation needs the model output it scores."""
    test = cfg.MODEL.EOV_SEG.TEST
    for dataset in cfg.DATASETS.TEST:
        kind = MetadataCatalog.get(dataset).get("evaluator_type", "")
        if kind == "sem_seg" and not test.SEMANTIC_ON:
            raise ValueError(f"Dataset '{dataset}' is scored by mIoU: set MODEL.EOV_SEG.TEST.SEMANTIC_ON True "
                             "(and PANOPTIC_ON / INSTANCE_ON False, as the authors evaluate it)")
        if kind.endswith("panoptic_seg") and not (test.PANOPTIC_ON or test.SEMANTIC_ON or test.INSTANCE_ON):
            raise ValueError(f"Dataset '{dataset}': every output of MODEL.EOV_SEG.TEST is off")


# Checks run before training or evaluation, by meta-architecture (EOV-Seg also checks its
# vocabularies when the model is built).
CONFIG_CHECKS = {"SED": check_sed_vocabularies, "EOV_SEG": check_eov_seg_outputs}


def semantic_table(m) -> str:
    summary = tabulate([[m["mIoU"], m["fwIoU"], m["mACC"], m["pACC"]]],
                       headers=["mIoU", "fwIoU", "mACC", "pACC"], floatfmt=".2f", tablefmt="pipe")
    rows = [[k[4:], v, m.get("ACC-" + k[4:])] for k, v in m.items() if k.startswith("IoU-")]
    return summary + "\n\n" + tabulate(rows, headers=["class", "IoU", "ACC"], floatfmt=".2f",
                                          tablefmt="pipe", missingval="-")


def panoptic_table(m) -> str:
    rows = [[group] + [m[k + suffix] for k in ("PQ", "SQ", "RQ")]
            for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st"))]
    return tabulate(rows, headers=["", "PQ", "SQ", "RQ"], floatfmt=".2f", tablefmt="pipe")


def instance_table(m) -> str:
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    return tabulate([[m.get(k) for k in keys]], headers=keys, floatfmt=".2f", tablefmt="pipe", missingval="-")


# Result tables by detectron2 task key, in the order they are printed.
RESULT_TABLES = {"panoptic_seg": panoptic_table, "segm": instance_table, "sem_seg": semantic_table}


def format_results(results) -> str:
    """The tables of each dataset: PQ/SQ/RQ (All, Things, Stuff), mask AP, and mIoU, fwIoU,
    mACC, pACC with per-class IoU/accuracy."""
    tables = []
    for dataset, res in results.items():
        for task, table in RESULT_TABLES.items():
            if task in res:
                tables.append(f"{task} results on {dataset}:\n" + table(res[task]))
    return "\n\n".join(tables)


def report(cfg, results) -> None:
    """Log the result tables of each dataset and write them to OUTPUT_DIR/results.json (main process)."""
    if not comm.is_main_process() or not results:
        return
    logger.info("Evaluation results\n%s", format_results(results))
    with open(os.path.join(cfg.OUTPUT_DIR, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


def sed_custom_keys(train: List[CustomSplit], test: List[CustomSplit], explicit: Set[str]) -> Dict:
    """SED's vocabularies, and the ignore value of its loss, follow its custom datasets."""
    for split in train + test:
        if split.kind != "semantic":
            raise CustomDatasetError(f"SED segments semantically, but {split.path()} has {split.kind} ground "
                                     "truth: give a split with labels/ (see README, 'Your own dataset')")
    keys = {}
    if train:
        keys["MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON"] = train[0].classes_file
        keys["MODEL.SEM_SEG_HEAD.IGNORE_VALUE"] = train[0].ignore_label
    if test:
        keys["MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON"] = test[0].classes_file
    return keys


def eov_seg_custom_keys(train: List[CustomSplit], test: List[CustomSplit], explicit: Set[str]) -> Dict:
    """EOV-Seg's vocabularies follow its custom datasets; NUM_CLASSES follows the training
    vocabulary unless that is given on the command line."""
    for split in train:
        if split.kind != "panoptic":
            raise CustomDatasetError(f"EOV-Seg trains on panoptic ground truth, but {split.path()} has "
                                     f"{split.kind} labels: give a split with panoptic.json and panoptic/")
    keys = {}
    if train:
        keys["MODEL.EOV_SEG.TRAIN_CLASS_JSON"] = train[0].classes_file
        if "MODEL.EOV_SEG.TRAIN_CLASS_JSON" not in explicit:
            keys["MODEL.EOV_SEG.NUM_CLASSES"] = len(train[0].vocabulary)
    if test:
        keys["MODEL.EOV_SEG.TEST_CLASS_JSON"] = test[0].classes_file
    return keys


# Config values that follow the custom datasets (folders) of DATASETS.TRAIN / DATASETS.TEST, by
# meta-architecture; keys given on the command line keep their value.
CUSTOM_DATASET_KEYS = {"SED": sed_custom_keys, "EOV_SEG": eov_seg_custom_keys}


def build_cfg(args):
    """The config of ``args``; custom dataset folders in DATASETS are checked (stopping on any
    problem) and registered, and the model's vocabulary follows them."""
    cfg = get_cfg()
    add_project_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    train, test = resolve_custom_datasets(cfg)
    follow = CUSTOM_DATASET_KEYS.get(cfg.MODEL.META_ARCHITECTURE)
    if follow and (train or test):
        explicit = set(args.opts[0::2])
        cfg.merge_from_list([x for k, v in follow(train, test, explicit).items() if k not in explicit for x in (k, v)])
    return cfg


# Long dumps that only the run's log file (OUTPUT_DIR/log.txt) gets: the console shows progress
# with its ETA and the result tables.
LOG_FILE_ONLY = ("Environment info:", "Command line arguments:", "Contents of args.config_file",
                 "Running with full config:", "Model:\n", "OrderedDict([")


class LogFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LOG_FILE_ONLY)


def setup_loggers(output_dir: str) -> None:
    """The loggers of detectron2 (called as ``default_setup`` calls them, so it reuses them),
    fvcore and this project, their console handlers without the ``LOG_FILE_ONLY`` dumps."""
    rank = comm.get_rank()
    loggers = [setup_logger(output_dir, distributed_rank=rank), setup_logger(output_dir, distributed_rank=rank, name="fvcore"),
               setup_logger(output_dir, distributed_rank=rank, name="sed")]
    for handler in (h for logger in loggers for h in logger.handlers):
        if getattr(handler, "stream", None) is sys.stdout and not any(isinstance(f, LogFileOnly) for f in handler.filters):
            handler.addFilter(LogFileOnly())


def setup(args):
    cfg = build_cfg(args)
    cfg.freeze()
    setup_loggers(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    configure_cpu_memory(cfg)
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        logging.getLogger("sed").info(f"Environment, arguments and full config: {os.path.join(cfg.OUTPUT_DIR, 'log.txt')}")
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
        # Set by the final evaluation of DefaultTrainer's EvalHook, through Trainer.test.
        results = getattr(trainer, "_last_eval_results", None)
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    if args.num_gpus * args.num_machines > 1:
        build_cfg(args)  # checks custom datasets once (remembered) before the processes start
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
