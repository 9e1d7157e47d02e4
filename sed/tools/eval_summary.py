"""The published benchmarks of eval.sh for a config's model (its family's, :mod:`sed.family`),
and the summary table of their results.

    python tools/eval_summary.py --list CONFIG [KEY VALUE ...]  # NAME DATASET STAMP OVERRIDES... per line
    python tools/eval_summary.py --summarize CONFIG OUT/eval   # print + write summary.csv/.md

(also ``python -m sed.tools.eval_summary``). ``--list`` lists the benchmarks whose data are on
disk; KEY VALUE are the overrides eval.sh passes to each run, and STAMP identifies what a run
computes: the weights file (path, size, modification time), the config with the benchmark's
and these overrides, and the dataset.
"""
import argparse
import csv
import hashlib
import json
import os
import sys
from typing import List, Optional, Sequence, Tuple

from detectron2.config import CfgNode
from tabulate import tabulate

from sed.config import ConfigError, build_config
from sed.data.datasets import DATASETS, dataset_root
from sed.data.resumable_evaluation import evaluation_config
from sed.family import Benchmark, get_family
from sed.tools import cli


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """``config_file`` with the overrides ``opts`` (KEY VALUE ...) (:func:`sed.config.build_config`);
    stops, naming the problem, on an override that does not apply."""
    try:
        return build_config(config_file, opts)
    except ConfigError as e:
        if not opts:  # the config file itself: its own error
            raise
        raise SystemExit(f"eval.sh: the overrides {' '.join(opts)} do not apply to {config_file}: {e}")


def benchmarks_of(config_file: str) -> Tuple[Benchmark, ...]:
    """The published benchmarks of the config's model family, in the order of its table."""
    try:
        family = get_family(load_config(config_file))
    except ValueError as e:
        raise SystemExit(f"eval.sh: {e}") from None
    if not family.published:
        raise SystemExit(f"eval.sh: no published benchmarks for {family.title}")
    return family.published


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


def summarize(benchmarks: Sequence[Benchmark], eval_dir: str) -> Tuple[List[str], list]:
    """The table of ``benchmarks``' results under ``eval_dir`` (one row each: its metrics, or
    "failed" / "missing" where a run left no results): (headers, rows)."""
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = cli.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--list", metavar="CONFIG")
    group.add_argument("--summarize", nargs=2, metavar=("CONFIG", "EVAL_DIR"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="--list: the config overrides of every run")
    return cli.run_cli(parser, run, argv)


def run(args: argparse.Namespace) -> int:
    """List the benchmarks (--list) or print and write the summary table (--summarize)."""
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
