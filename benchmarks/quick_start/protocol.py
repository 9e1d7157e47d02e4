"""The quick start's results over many floating-point orders on one CPU: the runs behind the
README's promise (docs/quick-start-runs.md).

    python benchmarks/quick_start/protocol.py sed --output-dir output/quick_start_runs/sed \\
        [--seeds 0 1 2 3] [--aten default avx2] [--onednn AVX AVX2] [--threads 1 2] [--slots 2]

Runs ``bash tools/quickstart.sh MODEL RUN_DIR SEED <seed>`` once per ATen kernel set
(``ATEN_CPU_CAPABILITY``), oneDNN instruction set (``ONEDNN_MAX_CPU_ISA``), thread count and
seed, each in ``RUN_DIR = OUTPUT_DIR/<aten>_<onednn>_t<threads>_s<seed>``, as many at a time as their threads
fit in ``--slots`` cores. Runs already finished are kept. Then writes ``OUTPUT_DIR/runs.json``
(each run's setting and metrics, the CPU, the versions) and prints the Markdown table with the
minimum of every column. ``--collect`` only does the last step.
"""
import argparse
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = re.compile(r"^(?P<aten>[a-z0-9]+)_(?P<onednn>[A-Z0-9_]+)_t(?P<threads>\d+)_s(?P<seed>\d+)$")


# Metrics of the tables: panoptic quality, then mIoU and the per-class IoUs.
COLUMNS = ("PQ", "PQ_th", "PQ_st", "mIoU")


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())


def run_all(model: str, out_dir: str, settings: List[Dict], slots: int) -> None:
    """Run the quick start once per setting, at most ``slots`` threads at a time."""
    todo = [s for s in settings if not os.path.isfile(os.path.join(out_dir, s["name"], "results.json"))]
    running: List = []
    while todo or running:
        for proc, setting, start in list(running):
            if proc.poll() is not None:
                running.remove((proc, setting, start))
                print(f"{setting['name']}: exit {proc.returncode} after {time.time() - start:.0f} s", flush=True)
        free = slots - sum(s["threads"] for _, s, _ in running)
        for setting in [s for s in todo if s["threads"] <= free or not running][:1]:
            todo.remove(setting)
            out = os.path.join(out_dir, setting["name"])
            os.makedirs(out, exist_ok=True)
            env = dict(os.environ, ATEN_CPU_CAPABILITY=setting["aten"], ONEDNN_MAX_CPU_ISA=setting["onednn"],
                       OMP_NUM_THREADS=str(setting["threads"]), MKL_NUM_THREADS=str(setting["threads"]))
            command = ["bash", "tools/quickstart.sh", model, out, "SEED", str(setting["seed"])]
            with open(os.path.join(out, "run.log"), "w") as log:
                running.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                                setting, time.time()))
            print(f"{setting['name']}: started", flush=True)
        time.sleep(2)


def metrics_of(results: Dict) -> Dict[str, float]:
    """The ``COLUMNS`` and per-class IoUs of a run's results.json (one dataset)."""
    (tasks,) = results.values()
    return {k: v for task in tasks.values() for k, v in task.items() if k in COLUMNS or k.startswith("IoU-")}


def collect(out_dir: str) -> List[Dict]:
    runs = []
    for name in sorted(os.listdir(out_dir)):
        match = RUN.match(name)
        path = os.path.join(out_dir, name, "results.json")
        if not match or not os.path.isfile(path):
            continue
        with open(path) as f:
            metrics = metrics_of(json.load(f))
        setting = {k: (int(v) if k in ("threads", "seed") else v) for k, v in match.groupdict().items()}
        runs.append({**setting, "metrics": metrics})
    return runs


def table(runs: List[Dict]) -> str:
    columns = [c for c in runs[0]["metrics"] if c in COLUMNS] + [c for c in runs[0]["metrics"] if c not in COLUMNS]
    head = ["ATen", "oneDNN", "threads", "seed"] + [c.replace("IoU-", "") for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(runs, key=lambda r: (r["seed"], r["threads"], r["aten"], r["onednn"])):
        lines.append("| " + " | ".join([r["aten"], r["onednn"], str(r["threads"]), str(r["seed"])]
                                        + [f"{r['metrics'][c]:.1f}" for c in columns]) + " |")
    lines.append("| **minimum** | | | | " + " | ".join(f"**{min(r['metrics'][c] for r in runs):.1f}**"
                                                       for c in columns) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["sed", "eov_seg"], help="as bash tools/quickstart.sh takes it")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--aten", nargs="+", default=["default", "avx2"], help="ATEN_CPU_CAPABILITY values")
    parser.add_argument("--onednn", nargs="+", default=["AVX", "AVX2"], help="ONEDNN_MAX_CPU_ISA values")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--slots", type=int, default=os.cpu_count(), help="cores the runs share")
    parser.add_argument("--collect", action="store_true", help="only collect finished runs")
    args = parser.parse_args()
    if not args.collect:
        settings = [dict(name=f"{a}_{o}_t{t}_s{s}", aten=a, onednn=o, threads=t, seed=s)
                    for s, t, a, o in itertools.product(args.seeds, args.threads, args.aten, args.onednn)]
        run_all(args.model, args.output_dir, settings, args.slots)
    runs = collect(args.output_dir) if os.path.isdir(args.output_dir) else []
    if not runs:
        print(f"error: no finished run under {args.output_dir}", file=sys.stderr)
        return 1
    import torch

    summary = {"model": args.model, "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "runs": runs}
    with open(os.path.join(args.output_dir, "runs.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
