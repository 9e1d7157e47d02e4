"""The published benchmarks of eval.sh for a config's model, and the summary table of their
results.

    python tools/eval_summary.py --list CONFIG [KEY VALUE ...]  # NAME DATASET STAMP OVERRIDES... per line
    python tools/eval_summary.py --summarize CONFIG OUT/eval   # print + write summary.csv/.md

``--list`` lists the benchmarks whose data are on disk; KEY VALUE are the overrides eval.sh
passes to each run, and STAMP identifies what a run computes: the weights file (path, size,
modification time), the config with the benchmark's and these overrides, and the dataset.
"""
import argparse
import csv
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from detectron2.config import get_cfg
from tabulate import tabulate

from sed import add_project_config
from sed.data.datasets import DATASETS, dataset_root
from sed.data.resumable_evaluation import evaluation_config

VOCABULARIES = Path(__file__).resolve().parents[1] / "datasets"
SEMANTIC = [("mIoU", "sem_seg", "mIoU"), ("fwIoU", "sem_seg", "fwIoU"), ("mACC", "sem_seg", "mACC"),
            ("pACC", "sem_seg", "pACC")]
PANOPTIC = [("PQ", "panoptic_seg", "PQ"), ("SQ", "panoptic_seg", "SQ"), ("RQ", "panoptic_seg", "RQ"),
            ("PQ_th", "panoptic_seg", "PQ_th"), ("PQ_st", "panoptic_seg", "PQ_st"), ("AP", "segm", "AP"),
            ("mIoU", "sem_seg", "mIoU")]


@dataclass(frozen=True)
class Benchmark:
    name: str  # as in the published table
    dataset: str  # registered dataset
    overrides: Tuple[str, ...]  # config KEY VALUE pairs of this evaluation
    columns: Tuple[Tuple[str, str, str], ...]  # (header, task, metric) reported


def sed_benchmark(name: str, dataset: str, vocabulary: str) -> Benchmark:
    return Benchmark(name, dataset, ("MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", str(VOCABULARIES / vocabulary),
                                     "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1,1]"), tuple(SEMANTIC))


def eov_benchmark(name: str, dataset: str, vocabulary: str, panoptic: bool = False) -> Benchmark:
    """Panoptic: PQ, AP and mIoU with every output on; semantic: mIoU from the semantic output
    alone, as the authors evaluate it (datasets-panoptic.md 7.5)."""
    switches = ("PANOPTIC_ON", str(panoptic), "INSTANCE_ON", str(panoptic), "SEMANTIC_ON", "True")
    overrides = ("MODEL.EOV_SEG.TEST_CLASS_JSON", str(VOCABULARIES / "eov_seg" / vocabulary),
                 *[f"MODEL.EOV_SEG.TEST.{v}" if i % 2 == 0 else v for i, v in enumerate(switches)])
    return Benchmark(name, dataset, overrides, tuple(PANOPTIC if panoptic else SEMANTIC[:1]))


# The published table of each model (meta-architecture).
BENCHMARKS: Dict[str, List[Benchmark]] = {
    "SED": [
        sed_benchmark("A-847", "ade20k_full_sem_seg_freq_val_all", "ade847.json"),
        sed_benchmark("PC-459", "context_459_test_sem_seg", "pc459.json"),
        sed_benchmark("A-150", "ade20k_150_test_sem_seg", "ade150.json"),
        sed_benchmark("PC-59", "context_59_test_sem_seg", "pc59.json"),
        sed_benchmark("PAS-20", "voc_2012_test_sem_seg", "voc20.json"),
        sed_benchmark("PAS-20b", "voc_2012_test_background_sem_seg", "voc20b.json"),
    ],
    "EOV_SEG": [
        eov_benchmark("ADE-150-panoptic", "openvocab_ade20k_panoptic_val", "ade20k_150.json", panoptic=True),
        eov_benchmark("A-847", "openvocab_ade20k_full_sem_seg_val", "ade20k_847.json"),
        eov_benchmark("PC-459", "openvocab_pascal_ctx459_sem_seg_val", "pascal_ctx_459.json"),
        eov_benchmark("A-150", "openvocab_ade20k_sem_seg_val", "ade20k_150.json"),
        eov_benchmark("PC-59", "openvocab_pascal_ctx59_sem_seg_val", "pascal_ctx_59.json"),
        eov_benchmark("PAS-20", "openvocab_pascal20_sem_seg_val", "pascal_voc_20.json"),
    ],
}


def load_config(config_file: str, opts: Sequence[str] = ()):
    """``config_file`` with the overrides ``opts`` (KEY VALUE ...); stops, naming the problem,
    on an override that does not apply."""
    cfg = get_cfg()
    add_project_config(cfg)
    cfg.merge_from_file(config_file)
    try:
        cfg.merge_from_list(list(opts))
    except (AssertionError, KeyError, ValueError) as e:  # yacs reports unknown keys by assertion
        raise SystemExit(f"eval.sh: the overrides {' '.join(opts)} do not apply to {config_file}: {e}")
    return cfg


def benchmarks_of(config_file: str) -> List[Benchmark]:
    arch = load_config(config_file).MODEL.META_ARCHITECTURE
    if arch not in BENCHMARKS:
        raise SystemExit(f"eval.sh: no published benchmarks for MODEL.META_ARCHITECTURE {arch!r}")
    return BENCHMARKS[arch]


def dataset_exists(name: str) -> bool:
    spec = next(d for d in DATASETS if d.name == name)
    root = dataset_root()
    return all(os.path.exists(os.path.join(root, p)) for p in spec.required_paths)


def stamp(config_file: str, benchmark: Benchmark, opts: Sequence[str]) -> str:
    """What eval.sh's run of ``benchmark`` with overrides ``opts`` computes, as a short hash:
    equal stamps, equal results (the results of a run stay valid while its stamp is unchanged)."""
    cfg = load_config(config_file, [*benchmark.overrides, *opts])
    weights = cfg.MODEL.WEIGHTS
    if os.path.isfile(weights):
        info = os.stat(weights)
        weights = f"{os.path.abspath(weights)} {info.st_size} {info.st_mtime_ns}"
    text = "\0".join([weights, evaluation_config(cfg), benchmark.dataset])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def summarize(benchmarks: List[Benchmark], eval_dir: str) -> Tuple[List[str], list]:
    headers = []
    for b in benchmarks:
        headers += [h for h, _, _ in b.columns if h not in headers]
    rows = []
    for b in benchmarks:
        path = os.path.join(eval_dir, b.name, "results.json")
        if os.path.isfile(path):
            with open(path) as f:
                results = json.load(f)[b.dataset]
            values = {h: round(results[task][metric], 2) for h, task, metric in b.columns
                      if metric in results.get(task, {})}
        else:
            status = "failed" if dataset_exists(b.dataset) else "missing"
            values = {h: status for h, _, _ in b.columns}
        rows.append([b.name] + [values.get(h, "-") for h in headers])
    return ["benchmark"] + headers, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--list", metavar="CONFIG")
    group.add_argument("--summarize", nargs=2, metavar=("CONFIG", "EVAL_DIR"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="--list: the config overrides of every run")
    args = parser.parse_args()
    if args.list:
        for b in benchmarks_of(args.list):
            if dataset_exists(b.dataset):
                print(b.name, b.dataset, stamp(args.list, b, args.opts), *b.overrides)
            else:
                print(f"eval.sh: {b.name} skipped: dataset {b.dataset} is not on disk", file=sys.stderr)
        return 0
    config_file, eval_dir = args.summarize
    headers, rows = summarize(benchmarks_of(config_file), eval_dir)
    table = tabulate(rows, headers=headers, tablefmt="pipe")
    print(table)
    os.makedirs(eval_dir, exist_ok=True)
    with open(os.path.join(eval_dir, "summary.csv"), "w", newline="") as f:
        csv.writer(f).writerows([headers] + rows)
    with open(os.path.join(eval_dir, "summary.md"), "w") as f:
        f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
