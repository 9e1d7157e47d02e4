"""The command line of ``train_net.py``: train, or evaluate (``--eval-only``), in one process or
several (detectron2's ``default_argument_parser`` and launcher)."""
import argparse
import os
from typing import Dict, Optional, Sequence

from detectron2.engine import default_argument_parser

from ..checkpoint import Checkpointer, check_weights_given
from ..compile import maybe_compile
from ..launch import launch
from ..tools import cli
from .configure import build_cfg, setup
from .trainer import Trainer


def main(args: argparse.Namespace) -> Optional[Dict]:
    """One process's run of ``args``: training (resumed from OUTPUT_DIR with ``--resume``), or
    with ``--eval-only`` the evaluation of MODEL.WEIGHTS (or the last checkpoint with
    ``--resume``). Returns the final evaluation's results, if there was one."""
    cfg = setup(args)
    if args.eval_only:
        if not (args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))):
            check_weights_given(cfg)  # (--resume evaluates the run's last checkpoint instead)
        model = Trainer.build_model(cfg)
        Checkpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, maybe_compile(model, cfg))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # Set by the final evaluation of DefaultTrainer's EvalHook, through Trainer.test.
    return getattr(trainer, "_last_eval_results", None)


def launch_main(args: argparse.Namespace) -> int:
    """:func:`main` in each process of the launch ``args`` ask for."""
    if args.num_gpus * args.num_machines > 1:
        # Check the config and custom dataset folders here, once, stopping before any process
        # starts; the processes find the folders' success remembered (sed.data.custom.CHECK_CACHE_DIR).
        build_cfg(args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    return 0


def run(argv: Optional[Sequence[str]] = None) -> int:
    """``train_net.py``: parse ``argv`` (default: the command line) with detectron2's parser and
    :func:`launch_main`; an error of the user's input (a config key, a dataset name, weights) is
    one line and exit status 1 (``--debug``: with its traceback)."""
    parser = default_argument_parser()
    parser.prog = "train_net.py"
    parser.add_argument("--debug", action="store_true",
                        help="on an error, also print the full traceback (give it before the KEY VALUE overrides)")
    return cli.run_cli(parser, launch_main, argv)
