"""Check and measure a GPU machine in one go: the CUDA test tier, then the benchmarks of both
models, each bounded in time, all within a total budget. `bash tools/gpu_check.sh` runs it
(installing from an offline bundle first where needed).

    python tools/gpu_check.py OUT_DIR [--dry-run] [--budget-s 510] [--run-timeout-s 120]

Writes under OUT_DIR: environment.json (device, versions), cuda_tier.log and cuda_tier.xml
(pytest), one JSON per benchmark (sed.tools.benchmark's figures), gpu_check.log (every run's
output) and summary.json (each step's status, seconds and main figures; also printed, a line
per step). Benchmarks run in the order of RUNS; those that no longer fit the budget are listed as
"not run". --dry-run does the same on the CPU with each model family's tiny config and sizes
(ModelFamily.tiny_config, tiny_opts; for CI). Exits non-zero when the CUDA tier or a benchmark
fails.
"""
import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import List

import torch

from sed.config import build_config
from sed.family import ModelFamily, get_family
from sed.tools import benchmark  # imported once: each run forks from this process

ROOT = Path(__file__).resolve().parents[1]
SED_B, SED_L = "configs/convnextB_768.yaml", "configs/convnextL_768.yaml"
EOV_S, EOV_L = "configs/eov_seg/eov_seg_R50.yaml", "configs/eov_seg/eov_seg_convnext_l.yaml"
# --dry-run: the values replacing the real ones
DRY_RUN_VALUES = ({("--vocabulary", v): "12" for v in ("ade150", "ade847", "coco")} | {("--dtype", "float16"): "bfloat16"}
                  | {("TEST.COMPILE_MODE", "max-autotune-no-cudagraphs"): "default"})


def dry_run_values(values: List[str]) -> List[str]:
    """``values`` (flags and values, or KEY VALUE pairs) with each value that follows its key in
    DRY_RUN_VALUES replaced."""
    return [DRY_RUN_VALUES.get((a, b), b) for a, b in zip(["", *values], values)]


@lru_cache(maxsize=None)
def family_of(config: str) -> ModelFamily:
    """The model family of ``config`` (relative to the repository)."""
    # MODEL.DEVICE cpu: a CUDA config would otherwise have build_config ask whether CUDA is
    # available, which initialises CUDA in this process before it forks the benchmarks.
    return get_family(build_config(str(ROOT / config), ["MODEL.DEVICE", "cpu"]))


@dataclass
class Run:
    """One sed.tools.benchmark invocation."""

    name: str  # also the JSON's file name
    config: str
    args: List[str]
    image_size: List[int] = field(default_factory=list)  # inference input; empty: the model's default
    batch_size: int = 1
    opts: List[str] = field(default_factory=list)
    in_dry_run: bool = True  # False: on a GPU only (what a dry run would repeat of another run)
    timeout_s: float = 0  # seconds it may take at most (0: --run-timeout-s)

    def argv(self, dry_run: bool, device: str, out_dir: Path) -> List[str]:
        """benchmark.py's arguments; a dry run uses the family's tiny config, 64-pixel inputs
        and crops, 12 classes, batches of at most 2, two timed iterations, bfloat16 for float16
        (which has no fast CPU kernels) and inductor's default mode for the CUDA ones."""
        args = dry_run_values(self.args) if dry_run else self.args
        family = family_of(self.config)
        config = family.tiny_config if dry_run else self.config
        size = ["--image-size", "64"] if dry_run else (["--image-size", *map(str, self.image_size)] if self.image_size else [])
        crop = list(family.tiny_opts) if dry_run else []
        timing = ["--warmup", "1", "--iters", "2"] if dry_run else ["--warmup", "3", "--iters", "10"]
        batch = min(self.batch_size, 2) if dry_run else self.batch_size
        # A dry run's compiled graphs go to a cache of its own: each run compiles as on a fresh machine.
        opts = [*dry_run_values(self.opts), "TEST.COMPILE_CACHE_DIR", str(out_dir / "inductor")] if dry_run else self.opts
        return ["--config-file", config, "--device", device, *size, "--batch-size", str(batch), *args, *timing,
                "--random-text-embeddings", "--output", str(out_dir / f"{self.name}.json"),
                "--opts", family.text_cache_key, "", *crop, *opts]


def inference_runs() -> List[Run]:
    """Both sizes of each model; a dry run, where both sizes become the family's tiny config,
    runs the first size only."""
    runs = []
    for label, config in (("sed_b", SED_B), ("sed_l", SED_L)):
        for batch in (1, 8):
            for dtype in ("float32", "bfloat16"):
                for fast in (False, True):
                    flops = [] if (batch, dtype, fast) == (1, "float32", False) else ["--no-flops"]
                    runs.append(Run(f"{label}_ade150_b{batch}_{dtype}{'_fast8' if fast else ''}", config,
                                    ["--vocabulary", "ade150", "--dtype", dtype, *flops,
                                     *(["--fast", "--topk", "8"] if fast else [])], [768, 768], batch,
                                    in_dry_run=label == "sed_b"))
    for label, config in (("eov_seg_s", EOV_S), ("eov_seg_l", EOV_L)):
        for dtype in ("float32", "bfloat16"):
            flops = [] if dtype == "float32" else ["--no-flops"]
            runs.append(Run(f"{label}_ade150_panoptic_b1_{dtype}", config,
                            ["--vocabulary", "ade150", "--dtype", dtype, *flops], [640, 853],
                            in_dry_run=label == "eov_seg_s"))
    return runs


INFERENCE = inference_runs()
HEADLINE = ("sed_b_ade150_b1_float32", "eov_seg_s_ade150_panoptic_b1_float32")
# Compiled inference (TEST.COMPILE) timed against eager, with each CUDA mode of torch.compile. A
# dry run compiles the first with inductor's default mode (the CPU has no CUDA graphs), and skips
# the others (tests/test_compile.py compiles both families on the CPU).
COMPILED = [
    Run("sed_b_ade150_b1_float32_compiled_autotune", SED_B, ["--vocabulary", "ade150", "--compile", "--no-flops"],
        [768, 768], opts=["TEST.COMPILE_MODE", "max-autotune-no-cudagraphs"], timeout_s=240),
    Run("sed_b_ade150_b1_float32_compiled_cudagraphs", SED_B, ["--vocabulary", "ade150", "--compile", "--no-flops"],
        [768, 768], opts=["TEST.COMPILE_MODE", "reduce-overhead"], in_dry_run=False, timeout_s=240),
    Run("eov_seg_s_ade150_panoptic_b1_float32_compiled_autotune", EOV_S,
        ["--vocabulary", "ade150", "--compile", "--no-flops"], [640, 853],
        opts=["TEST.COMPILE_MODE", "max-autotune-no-cudagraphs"], in_dry_run=False, timeout_s=240),
]
# In order of importance: later runs are the first to go when the budget runs out.
RUNS = [
    *[r for r in INFERENCE if r.name in HEADLINE],
    *COMPILED,
    Run("sed_b_train_768_coco171_amp", SED_B, ["--train", "--vocabulary", "coco", "--dtype", "float16"]),
    Run("sed_b_train_768_coco171_fp32", SED_B, ["--train", "--vocabulary", "coco", "--dtype", "float32"]),
    Run("eov_seg_s_train_1024_amp", EOV_S, ["--train", "--dtype", "float16"], batch_size=2),
    Run("eov_seg_s_train_1024_fp32", EOV_S, ["--train", "--dtype", "float32"], batch_size=2),
    Run("sed_b_ade847_b1_float32_memory", SED_B, ["--vocabulary", "ade847", "--no-flops"], [768, 768]),
    Run("sed_l_ade847_b1_float32_memory", SED_L, ["--vocabulary", "ade847", "--no-flops"], [768, 768],
        in_dry_run=False),
    *[r for r in INFERENCE if r.name not in HEADLINE],
]


def run_benchmark(argv: List[str], log_path: str):
    """Child process: sed.tools.benchmark's main with its output appended to the log."""
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.exit(benchmark.main(argv))


def headline(figures: dict) -> dict:
    """The figures summary.json keeps of one benchmark's JSON."""
    keys = ("ms_per_image", "images_per_s", "iterations_per_s", "peak_memory_mb", "peak_memory_mb_first_step",
            "gflops_per_image", "argmax_agreement_vs_float32", "panoptic_class_agreement_vs_float32", "classes_kept")
    kept = {k: figures[k] for k in keys if k in figures}
    if "ms_per_image" in kept:
        kept["ms_per_image"] = kept["ms_per_image"]["median"]
    if "compiled" in figures:  # --compile: the compiled figures beside the eager ones
        compiled = figures["compiled"]
        kept["compiled"] = {"ms_per_image": compiled["ms_per_image"]["median"],
                            "compile_s": compiled["compile"]["compile_s"],
                            "graphs": compiled["graphs_after_timing"],
                            **{k: v for k, v in compiled.items() if k.startswith(("argmax_agreement", "max_probability",
                                                                                 "panoptic_"))}}
    if "gflops_per_image" in figures and "images_per_s" in figures:
        kept["achieved_tflops"] = figures["gflops_per_image"] * figures["images_per_s"] / 1000
    return kept


def environment(device: str) -> dict:
    info = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "platform": platform.platform(), "cpu": benchmark.cpu_name(), "cpu_count": os.cpu_count()}
    if device == "cuda":  # queried in a child: this process must not initialise CUDA before forking
        query = "import torch, json; p = torch.cuda.get_device_properties(0); " \
                "print(json.dumps({'device_name': p.name, 'memory_gib': p.total_memory / 2**30, " \
                "'capability': list(torch.cuda.get_device_capability(0)), " \
                "'cudnn': torch.backends.cudnn.version()}))"
        info.update(json.loads(subprocess.run([sys.executable, "-c", query], capture_output=True, text=True,
                                              check=True).stdout))
    for module in ("torchvision", "detectron2", "open_clip", "timm", "numpy"):
        info[module] = __import__(module).__version__
    return info


def cuda_tier(out_dir: Path, dry_run: bool, timeout: float) -> dict:
    env = dict(os.environ, SED_TEST_DEVICE="cpu") if dry_run else dict(os.environ)
    cmd = [sys.executable, "-m", "pytest", "tests", "-m", "cuda", "-q", "-rs", f"--junitxml={out_dir / 'cuda_tier.xml'}"]
    start = time.perf_counter()
    with open(out_dir / "cuda_tier.log", "w") as log:
        try:
            code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
            status = "passed" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
    tail = (out_dir / "cuda_tier.log").read_text().strip().splitlines()
    return {"status": status, "seconds": time.perf_counter() - start, "result": tail[-1] if tail else ""}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiny configs and sizes")
    parser.add_argument("--budget-s", type=float, default=510, help="total seconds for the tier and the benchmarks")
    parser.add_argument("--run-timeout-s", type=float, default=120, help="seconds for one benchmark at most")
    parser.add_argument("--tier-timeout-s", type=float, default=240, help="seconds for the CUDA tier at most")
    args = parser.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"],
                                               capture_output=True).returncode == 0:
        raise SystemExit("gpu_check: no CUDA device (torch.cuda.is_available() is False); --dry-run runs on the CPU")
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = {"dry_run": args.dry_run, "environment": environment(device)}
    (out_dir / "environment.json").write_text(json.dumps(summary["environment"], indent=1) + "\n")
    print(f"[gpu_check] {summary['environment'].get('device_name', 'CPU (dry run)')}: CUDA tier", flush=True)
    summary["cuda_tier"] = cuda_tier(out_dir, args.dry_run, min(args.tier_timeout_s, args.budget_s))
    print(f"[gpu_check] CUDA tier {summary['cuda_tier']['status']}: {summary['cuda_tier']['result']}", flush=True)

    log_path = str(out_dir / "gpu_check.log")
    open(log_path, "w").close()
    fork = multiprocessing.get_context("fork")
    summary["runs"] = []
    for i, run in enumerate(RUNS):
        left = args.budget_s - (time.perf_counter() - start)
        entry = {"name": run.name, "config": run.config}
        if left < 10:
            summary["runs"].append({**entry, "status": "not run (time budget)"})
            continue
        if args.dry_run and not run.in_dry_run:
            summary["runs"].append({**entry, "status": "not run (dry run)"})
            continue
        argv_ = run.argv(args.dry_run, device, out_dir)
        with open(log_path, "a") as log:
            log.write(f"\n=== {run.name}: benchmark.py {' '.join(argv_)}\n")
        began = time.perf_counter()
        child = fork.Process(target=run_benchmark, args=(argv_, log_path))
        child.start()
        child.join(min(run.timeout_s or args.run_timeout_s, left))
        if child.is_alive():
            child.kill()
            child.join()
            status = "timeout"
        else:
            status = "ok" if child.exitcode == 0 else f"failed (exit {child.exitcode})"
        entry.update(status=status, seconds=time.perf_counter() - began)
        if status == "ok":
            entry.update(headline(json.loads((out_dir / f"{run.name}.json").read_text())))
        summary["runs"].append(entry)
        compiled = entry.get("compiled")
        print(f"[gpu_check] {i + 1}/{len(RUNS)} {run.name}: {status}, {entry['seconds']:.0f} s, "
              f"{entry.get('ms_per_image', float('nan')):.1f} ms/image, "
              f"{entry.get('peak_memory_mb', float('nan')):.0f} MB"
              + (f"; compiled {compiled['ms_per_image']:.1f} ms/image after {compiled['compile_s']:.0f} s compiling"
                 if compiled else ""), flush=True)
    summary["seconds"] = time.perf_counter() - start
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    failed = [r["name"] for r in summary["runs"] if r["status"] not in ("ok", "not run (time budget)",
                                                                          "not run (dry run)")]
    skipped = [r["name"] for r in summary["runs"] if r["status"] == "not run (time budget)"]
    print(f"[gpu_check] {summary['seconds']:.0f} s; {len(summary['runs']) - len(failed) - len(skipped)} benchmarks ok, "
          f"failed: {failed or 'none'}, not run (budget): {skipped or 'none'}; figures: {out_dir}/summary.json")
    return 0 if summary["cuda_tier"]["status"] == "passed" and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
