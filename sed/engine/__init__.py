"""Training and evaluation of the project's models with detectron2, behind ``train_net.py``:
the config and process setup (:mod:`.configure`), the trainer (:mod:`.trainer`), the result
tables (:mod:`.results`) and the command line (:mod:`.entry`)."""
from .configure import build_cfg, check_solver, setup
from .entry import main, run
from .results import format_results, report
from .trainer import Trainer

__all__ = ["Trainer", "build_cfg", "check_solver", "format_results", "main", "report", "run", "setup"]
