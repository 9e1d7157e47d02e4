"""The published benchmarks of eval.sh, and the summary table of their results.

    python tools/eval_summary.py --list                 # NAME DATASET VOCABULARY per line
    python tools/eval_summary.py --exists DATASET       # exit 0 if its data is on disk
    python tools/eval_summary.py --summarize OUT/eval   # print + write summary.csv/.md
"""
import argparse
import csv
import json
import os
import sys

from tabulate import tabulate

from sed.data.datasets import DATASETS, dataset_root

# (name in the table, registered dataset, vocabulary file in datasets/), as published.
BENCHMARKS = [
    ("A-847", "ade20k_full_sem_seg_freq_val_all", "ade847.json"),
    ("PC-459", "context_459_test_sem_seg", "pc459.json"),
    ("A-150", "ade20k_150_test_sem_seg", "ade150.json"),
    ("PC-59", "context_59_test_sem_seg", "pc59.json"),
    ("PAS-20", "voc_2012_test_sem_seg", "voc20.json"),
    ("PAS-20b", "voc_2012_test_background_sem_seg", "voc20b.json"),
]
METRICS = ["mIoU", "fwIoU", "mACC", "pACC"]


def dataset_exists(name: str) -> bool:
    spec = next(d for d in DATASETS if d.name == name)
    root = dataset_root()
    return all(os.path.exists(os.path.join(root, p)) for p in spec.required_paths)


def summarize(eval_dir: str) -> list:
    rows = []
    for name, dataset, _ in BENCHMARKS:
        path = os.path.join(eval_dir, name, "results.json")
        if os.path.isfile(path):
            with open(path) as f:
                metrics = json.load(f)[dataset]["sem_seg"]
            rows.append([name] + [round(metrics[m], 2) for m in METRICS])
        else:
            status = "failed" if dataset_exists(dataset) else "missing"
            rows.append([name] + [status] * len(METRICS))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--list", action="store_true")
    group.add_argument("--exists", metavar="DATASET")
    group.add_argument("--summarize", metavar="EVAL_DIR")
    args = parser.parse_args()
    if args.list:
        for row in BENCHMARKS:
            print(*row)
        return 0
    if args.exists:
        return 0 if dataset_exists(args.exists) else 1
    rows = summarize(args.summarize)
    headers = ["benchmark"] + METRICS
    print(tabulate(rows, headers=headers, tablefmt="pipe"))
    os.makedirs(args.summarize, exist_ok=True)
    with open(os.path.join(args.summarize, "summary.csv"), "w", newline="") as f:
        csv.writer(f).writerows([headers] + rows)
    with open(os.path.join(args.summarize, "summary.md"), "w") as f:
        f.write(tabulate(rows, headers=headers, tablefmt="pipe") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
