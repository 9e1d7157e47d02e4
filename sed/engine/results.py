"""The evaluation results of a run as tables: logged, and written to OUTPUT_DIR/results.json."""
import json
import logging
import os
from typing import Callable, Dict, Mapping

from detectron2.config import CfgNode
from detectron2.utils import comm
from tabulate import tabulate

logger = logging.getLogger(__name__)


def semantic_table(metrics: Mapping[str, float]) -> str:
    """mIoU, fwIoU, mACC, pACC, then each class's IoU and accuracy ("-" where it has none)."""
    summary = tabulate([[metrics["mIoU"], metrics["fwIoU"], metrics["mACC"], metrics["pACC"]]],
                       headers=["mIoU", "fwIoU", "mACC", "pACC"], floatfmt=".2f", tablefmt="pipe")
    rows = [[k[4:], v, metrics.get("ACC-" + k[4:])] for k, v in metrics.items() if k.startswith("IoU-")]
    return summary + "\n\n" + tabulate(rows, headers=["class", "IoU", "ACC"], floatfmt=".2f",
                                       tablefmt="pipe", missingval="-")


def panoptic_table(metrics: Mapping[str, float]) -> str:
    """PQ, SQ, RQ of all segments, of things and of stuff."""
    rows = [[group] + [metrics[k + suffix] for k in ("PQ", "SQ", "RQ")]
            for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st"))]
    return tabulate(rows, headers=["", "PQ", "SQ", "RQ"], floatfmt=".2f", tablefmt="pipe")


def instance_table(metrics: Mapping[str, float]) -> str:
    """Mask AP, AP50, AP75 and AP by object size."""
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    return tabulate([[metrics.get(k) for k in keys]], headers=keys, floatfmt=".2f", tablefmt="pipe",
                    missingval="-")


# Result tables by detectron2 task key, in the order they are printed.
RESULT_TABLES: Dict[str, Callable[[Mapping[str, float]], str]] = {
    "panoptic_seg": panoptic_table, "segm": instance_table, "sem_seg": semantic_table}


def format_results(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """The tables of ``results`` (dataset -> task -> metric -> value): PQ/SQ/RQ (All, Things,
    Stuff), mask AP, and mIoU, fwIoU, mACC, pACC with per-class IoU/accuracy."""
    tables = []
    for dataset, res in results.items():
        for task, table in RESULT_TABLES.items():
            if task in res:
                tables.append(f"{task} results on {dataset}:\n" + table(res[task]))
    return "\n\n".join(tables)


def report(cfg: CfgNode, results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> None:
    """Log the result tables of each dataset and write ``results`` to OUTPUT_DIR/results.json
    (main process only; nothing without results)."""
    if not comm.is_main_process() or not results:
        return
    logger.info("Evaluation results\n%s", format_results(results))
    with open(os.path.join(cfg.OUTPUT_DIR, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
