"""The config and process setup of a training or evaluation run: custom dataset folders, the
loggers, detectron2's default setup, and the checks run before anything is built."""
import argparse
import difflib
import logging
import os
import sys

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import AMP_DTYPES, build_config
from ..cpu_memory import configure_cpu_memory
from ..data.custom import resolve_custom_datasets
from ..family import get_family

logger = logging.getLogger(__name__)

# Long dumps that only the run's log file (OUTPUT_DIR/log.txt) gets: the console shows progress
# with its ETA and the result tables.
LOG_FILE_ONLY = ("Environment info:", "Command line arguments:", "Contents of args.config_file",
                 "Running with full config:", "Model:\n", "OrderedDict([")


class LogFileOnly(logging.Filter):
    """Keeps the ``LOG_FILE_ONLY`` dumps off the handler it filters."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LOG_FILE_ONLY)


def build_cfg(args: argparse.Namespace) -> CfgNode:
    """The config (unfrozen) of ``args`` (detectron2's ``default_argument_parser``: config_file,
    opts). Custom dataset folders in DATASETS are checked (stopping on any problem) and
    registered, and the config keys the model family ties to them follow them, except keys
    given in ``args.opts``. TEST.COMPILE without ``args.eval_only`` stops."""
    cfg = build_config(args.config_file, args.opts)
    if cfg.TEST.COMPILE and not args.eval_only:
        raise ValueError("TEST.COMPILE compiles inference with the weights frozen into its graphs: give --eval-only "
                         "(training and its periodic evaluations run eagerly; drop TEST.COMPILE)")
    train, test = resolve_custom_datasets(cfg)
    check_dataset_names(cfg)
    if train or test:
        explicit = set(args.opts[0::2])
        follow = get_family(cfg).custom_dataset_keys(train, test, explicit)
        cfg.merge_from_list([x for key, value in follow.items() if key not in explicit for x in (key, value)])
    return cfg


def check_dataset_names(cfg: CfgNode) -> None:
    """Raise a ValueError for a name in DATASETS.TRAIN / DATASETS.TEST that is neither a
    registered dataset nor a dataset folder (custom folders are registered by then), naming
    the closest registered ones."""
    registered = DatasetCatalog.list()
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name in registered:
                continue
            close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
            raise ValueError(
                f"DATASETS.{key}: {name!r} is not a registered dataset"
                + (f"; did you mean {' or '.join(close)}?" if close else f" (one of the {len(registered)} registered)")
                + ". A dataset folder of your own is named by its path, which holds a '/' (e.g. "
                "datasets/custom/NAME/val)")


def setup_loggers(output_dir: str) -> None:
    """The loggers of detectron2 (called as ``default_setup`` calls them, so it reuses them),
    fvcore and this project, their console handlers without the ``LOG_FILE_ONLY`` dumps."""
    rank = comm.get_rank()
    # setup_logger caches its calls by their exact arguments: detectron2's is called without a name.
    loggers = [setup_logger(output_dir, distributed_rank=rank),
               setup_logger(output_dir, distributed_rank=rank, name="fvcore"),
               setup_logger(output_dir, distributed_rank=rank, name="sed")]
    for handler in (h for each in loggers for h in each.handlers):
        console = getattr(handler, "stream", None) is sys.stdout
        if console and not any(isinstance(f, LogFileOnly) for f in handler.filters):
            handler.addFilter(LogFileOnly())


def check_solver(cfg: CfgNode) -> None:
    """Raises ValueError unless SOLVER.IMS_PER_BATCH splits evenly into GRAD_ACCUM_STEPS
    micro-batches on each process and SOLVER.AMP.PRECISION names an autocast type."""
    solver = cfg.SOLVER
    steps, world = solver.GRAD_ACCUM_STEPS, comm.get_world_size()
    if steps < 1 or solver.IMS_PER_BATCH % (steps * world):
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({solver.IMS_PER_BATCH}) must be a multiple of "
                         f"SOLVER.GRAD_ACCUM_STEPS ({steps}) x processes ({world})")
    if solver.AMP.PRECISION not in AMP_DTYPES:
        raise ValueError(f"SOLVER.AMP.PRECISION={solver.AMP.PRECISION!r}; choose one of {sorted(AMP_DTYPES)}")


def setup(args: argparse.Namespace) -> CfgNode:
    """The frozen config of ``args`` (:func:`build_cfg`), with this process set up for it
    (loggers, detectron2's ``default_setup``, CPU memory) and checked by its model family and
    :func:`check_solver`."""
    cfg = build_cfg(args)
    cfg.freeze()
    setup_loggers(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    configure_cpu_memory(cfg)
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        logger.info(f"Environment, arguments and full config: {os.path.join(cfg.OUTPUT_DIR, 'log.txt')}")
    get_family(cfg).check_config(cfg)
    check_solver(cfg)
    return cfg
