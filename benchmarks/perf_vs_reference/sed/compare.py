"""Side-by-side CPU inference of our SED-B and the authors' (xb534/SED): speed, memory and
output agreement, with identical random weights and identical text embeddings.

    python compare.py --ref-root REF --ref-path REF_SITE --workdir WORK --out results.json \
        [--ours-root OURS] [--modes plain,fast] [--busy-pattern PATTERN ...]

REF is a checkout of xb534/SED patched by ``../patch_reference.py sed REF`` (or the environment
variable SED_REF_ROOT); REF_SITE a folder holding einops for it (or SED_REF_PATH); OURS the
checkout to measure (default: the one holding this file). See ../README.md.

Steps (each ``worker.py`` task runs in its own process; see its docstring):
  1. prepare, once, in WORK (kept and reused unless --fresh):
     image.pt (one random uint8 RGB image, fixed seed), the reference model's random weights
     in the released layout, the vocabulary's text embeddings (computed once by our model
     from those weights; a few classes re-encoded by the authors' code as a check);
  2. per mode (plain; fast = TEST.FAST_INFERENCE True, TEST.TOPK k):
     a. wait until no process whose command line contains a --busy-pattern runs (pgrep -f,
        every --poll-s; at most --max-wait-s of waiting over the whole run);
     b. start one serving worker per implementation (built from its own config file, same
        weights, same text embeddings), then 1 warm-up + N timed forward passes each,
        interleaved ours, ref, ours, ref, ...; peak RSS from each worker;
     c. if a busy process shows up while the passes run (polled every --monitor-s), stop both
        workers (freeing their memory), discard the attempt (kept under "aborted_attempts")
        and start the mode again from a.;
  3. compare the outputs (sem_seg probabilities of the warm-up pass) and write the JSON.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # harness_common, patch_reference
import patch_reference  # noqa: E402
from harness_common import ServedWorker, default_vocabulary, own_git_checkout, reference_root  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# this file is benchmarks/perf_vs_reference/sed/compare.py in our repository
OURS_DEFAULT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
# What the authors' tree needs to run on a CPU (patch_reference.py); none changes the computation.
REFERENCE_FILE_PATCHES = patch_reference.descriptions("sed")
REFERENCE_HARNESS_PATCHES = [
    "open_clip.create_model_and_transforms forced to pretrained=None while building (random CLIP init; "
    "SEDPredictor hard-codes the laion_aesthetic_s13b_b82k tag)",
    "SEDPredictor.class_embeddings stubbed (zeros of the right shape) while building; the real text "
    "embeddings are assigned to sem_seg_head.predictor.text_features_test",
    "bundled open_clip (2.10.1) first on PYTHONPATH; einops from a separate --ref-path folder",
]
WORKER = os.path.join(HERE, "worker.py")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours-root", default=OURS_DEFAULT,
                   help="root of our checkout to measure (default: the one holding this harness, %(default)s)")
    p.add_argument("--ref-root", default=os.environ.get("SED_REF_ROOT"),
                   help="checkout of xb534/SED, patched by ../patch_reference.py (default: $SED_REF_ROOT)")
    p.add_argument("--ref-path", action="append",
                   default=[x for x in os.environ.get("SED_REF_PATH", "").split(os.pathsep) if x],
                   help="extra PYTHONPATH entry for the reference only: where einops is installed "
                        "(repeatable; default: $SED_REF_PATH, os.pathsep-separated)")
    p.add_argument("--python", default=sys.executable, help="interpreter of both workers")
    p.add_argument("--workdir", required=True,
                   help="scratch folder for the prepared weights, text embeddings, image and outputs "
                        "(reused by later runs)")
    p.add_argument("--out", required=True, help="results JSON")
    p.add_argument("--vocab", default="", help="class-name JSON (default: our checkout's ade150.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--height", type=int, default=640)
    p.add_argument("--width", type=int, default=853)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--modes", default="plain,fast")
    p.add_argument("--reinit", choices=("none", "normal"), default="none")
    p.add_argument("--fresh", action="store_true", help="redo the preparation even if WORK has it")
    p.add_argument("--ref-commit", default="",
                   help="commit of the xb534/SED tree, recorded in the JSON (default: its git HEAD, "
                        "if it is a git checkout)")
    p.add_argument("--busy-pattern", action="append", default=[],
                   help="wait while a process whose command line contains this runs (pgrep -f)")
    p.add_argument("--poll-s", type=float, default=30.0)
    p.add_argument("--max-wait-s", type=float, default=2400.0, help="total waiting for a quiet machine")
    p.add_argument("--monitor-s", type=float, default=5.0, help="poll period while passes are timed")
    p.add_argument("--max-attempts", type=int, default=6,
                   help="a mode is restarted (workers stopped, wait, new workers) when a busy process shows up")
    return p.parse_args()


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes
def worker_env(args, impl):
    env = dict(os.environ)
    if impl == "ref":
        ref = os.path.abspath(args.ref_root)
        paths = [os.path.join(ref, "open_clip", "src"), ref, *map(os.path.abspath, args.ref_path)]
    else:
        paths = [os.path.abspath(args.ours_root)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    env["PYTHONWARNINGS"] = "ignore"
    return env


def worker_cmd(args, impl, task, *extra):
    root = args.ref_root if impl == "ref" else args.ours_root
    return [args.python, WORKER, "--impl", impl, "--root", os.path.abspath(root), "--task", task,
            "--workdir", os.path.abspath(args.workdir), "--vocab", args.vocab, "--seed", str(args.seed),
            "--threads", str(args.threads), "--reinit", args.reinit, "--topk", str(args.topk), *extra]


def run_task(args, impl, task):
    log(f"{impl}: {task}")
    subprocess.run(worker_cmd(args, impl, task), env=worker_env(args, impl), check=True)


# --------------------------------------------------------------------------- quiet machine
def ancestors_and_self():
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    return pids


def busy_processes(patterns, exclude=()):
    skip = ancestors_and_self() | set(exclude)
    found = {}
    for pattern in patterns:
        r = subprocess.run(["pgrep", "-af", "--", pattern], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            pid, _, cmd = line.partition(" ")
            if int(pid) not in skip:
                found[int(pid)] = cmd[:200]
    return found


class QuietBudget:
    """Waits until no --busy-pattern process runs; at most --max-wait-s in all, over the run."""

    def __init__(self, args):
        self.args = args
        self.waited = 0.0
        self.log = []

    def wait(self, why):
        args = self.args
        if not args.busy_pattern:
            return True
        start, polls = time.time(), 0
        while True:
            busy = busy_processes(args.busy_pattern)
            polls += 1
            if not busy:
                break
            if self.waited + time.time() - start >= args.max_wait_s:
                self.waited += time.time() - start
                self.log.append({"why": why, "waited_s": time.time() - start, "polls": polls, "quiet": False,
                                 "still_running": list(busy.values())[:10]})
                return False
            log(f"busy ({len(busy)} matching processes, e.g. {next(iter(busy.values()))[:100]!r}); waiting")
            time.sleep(args.poll_s)
        self.waited += time.time() - start
        self.log.append({"why": why, "waited_s": time.time() - start, "polls": polls, "quiet": True})
        return True


class Monitor(threading.Thread):
    """Polls for --busy-pattern processes while passes are timed."""

    def __init__(self, args, exclude):
        super().__init__(daemon=True)
        self.args, self.exclude = args, exclude
        self.hits = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(self.args.monitor_s):
            if self.args.busy_pattern:
                busy = busy_processes(self.args.busy_pattern, exclude=self.exclude)
                if busy:
                    self.hits.append({"time": time.strftime("%H:%M:%S"), "processes": list(busy.values())[:5]})


# --------------------------------------------------------------------------- comparison
def compare_outputs(ours_path, ref_path):
    import torch

    a, b = torch.load(ours_path), torch.load(ref_path)
    diff = (a - b).abs()
    arg_a, arg_b = a.argmax(0), b.argmax(0)
    top2 = b.topk(2, dim=0).values
    margin = top2[0] - top2[1]
    return {
        "shape": list(a.shape),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "bitwise_identical": bool(torch.equal(a, b)),
        "argmax_agreement": float((arg_a == arg_b).float().mean()),
        "pixels_argmax_differs": int((arg_a != arg_b).sum()),
        "reference_top1_top2_margin": {"median": float(margin.median()), "min": float(margin.min())},
        "pixels_with_margin_below_max_abs_diff": int((margin < 2 * diff.max()).sum()),
        # Where the argmax differs: how far apart the two winners are (a tie within rounding?).
        "argmax_disagreement_max_gap": {
            "in_reference": float((b.gather(0, arg_b[None]) - b.gather(0, arg_a[None]))[0][arg_a != arg_b].max())
            if bool((arg_a != arg_b).any()) else 0.0,
            "in_ours": float((a.gather(0, arg_a[None]) - a.gather(0, arg_b[None]))[0][arg_a != arg_b].max())
            if bool((arg_a != arg_b).any()) else 0.0,
        },
    }


def output_stats(path):
    import torch

    p = torch.load(path)
    arg = p.argmax(0)
    return {
        "min": float(p.min()), "max": float(p.max()), "mean": float(p.mean()),
        "std_over_classes_mean": float(p.std(dim=0).mean()),
        "std_over_pixels_mean": float(p.flatten(1).std(dim=1).mean()),
        "distinct_argmax_classes": int(arg.unique().numel()),
        "largest_argmax_class_fraction": float(torch.bincount(arg.flatten()).max() / arg.numel()),
    }


def summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "all": xs}


# --------------------------------------------------------------------------- main
def prepare(args):
    import torch

    work = args.workdir
    image_path = os.path.join(work, "image.pt")
    if args.fresh or not os.path.isfile(image_path):
        g = torch.Generator().manual_seed(args.seed)
        image = torch.randint(0, 256, (3, args.height, args.width), dtype=torch.uint8, generator=g)
        torch.save(image, image_path)
    if args.fresh or not os.path.isfile(os.path.join(work, "weights_released_layout.pth")):
        run_task(args, "ref", "export-weights")
    if args.fresh or not os.path.isfile(os.path.join(work, "text_embeddings.pt")):
        run_task(args, "ours", "text-embeddings")
    if args.fresh or not os.path.isfile(os.path.join(work, "text_check.json")):
        run_task(args, "ref", "check-text")


def run_attempt(args, mode):
    """Start both workers, run the interleaved passes; stop early if a busy process shows up."""
    fast = mode == "fast"
    work = os.path.abspath(args.workdir)
    log(f"mode {mode}: starting workers")
    extra = ["--fast"] if fast else []
    servers = {impl: ServedWorker(impl, worker_cmd(args, impl, "serve", *extra), worker_env(args, impl))
               for impl in ("ours", "ref")}
    record = {impl: {"ready": s.ready, "warmup_s": [], "seconds": [], "passes": []} for impl, s in servers.items()}
    monitor = Monitor(args, exclude=[s.proc.pid for s in servers.values()])
    monitor.start()
    try:
        for i in range(args.warmup + args.iters):
            warm = i < args.warmup
            for impl in ("ours", "ref"):
                if monitor.hits:
                    break
                load = os.getloadavg()[0]
                save = os.path.join(work, f"out_{mode}_{impl}.pt") if i == 0 else ""
                answer = servers[impl].ask(cmd="forward", save=save)
                answer["loadavg_1min_before"] = load
                record[impl]["passes"].append(answer)
                (record[impl]["warmup_s"] if warm else record[impl]["seconds"]).append(answer["seconds"])
                log(f"{mode} pass {i} {'(warm-up) ' if warm else ''}{impl}: {answer['seconds']:.2f} s")
    finally:
        monitor.stop.set()
        monitor.join()
        for impl, s in servers.items():
            try:
                record[impl]["bye"] = s.close()
            except Exception as e:  # noqa: BLE001 - report, still stop the other
                record[impl]["bye"] = {"error": repr(e)}
    return servers, record, monitor.hits


def run_mode(args, mode, budget):
    work = os.path.abspath(args.workdir)
    aborted = []
    for attempt in range(args.max_attempts):
        quiet = budget.wait(f"{mode} attempt {attempt}")
        servers, record, hits = run_attempt(args, mode)
        if not hits or not quiet or attempt == args.max_attempts - 1:
            break
        log(f"mode {mode}: busy processes appeared ({hits[0]['processes'][0][:100]!r}); restarting the mode")
        aborted.append({"attempt": attempt, "busy": hits[:3],
                        "ours_s": record["ours"]["warmup_s"] + record["ours"]["seconds"],
                        "ref_s": record["ref"]["warmup_s"] + record["ref"]["seconds"]})
    result = {
        "machine_quiet_before": quiet,
        "busy_processes_seen_during_timing": hits,
        "aborted_attempts": aborted,
        "ours": {**summary(record["ours"]["seconds"]), "warmup_s": record["ours"]["warmup_s"]},
        "ref": {**summary(record["ref"]["seconds"]), "warmup_s": record["ref"]["warmup_s"]},
        "ratio_ref_over_ours_pairwise": summary([r / o for o, r in zip(record["ours"]["seconds"], record["ref"]["seconds"])]),
        "peak_rss_mb": {
            impl: {
                "inference": record[impl]["bye"].get("peak_rss_since_build_mb"),
                "after_build": record[impl]["ready"].get("rss_after_build_mb"),
                "whole_process_incl_build": record[impl]["bye"].get("peak_rss_process_mb"),
            } for impl in servers
        },
        "classes_nonzero": {impl: record[impl]["passes"][0].get("classes_nonzero") for impl in servers},
        "workers": {impl: {"build_s": record[impl]["ready"]["build_s"], "load": record[impl]["ready"]["load"],
                           "threads": record[impl]["ready"]["threads"],
                           "parameters": record[impl]["ready"]["parameters"]} for impl in servers},
        "passes": {impl: record[impl]["passes"] for impl in servers},
    }
    result["ratio_of_medians"] = result["ref"]["median"] / result["ours"]["median"]
    result["outputs"] = compare_outputs(os.path.join(work, f"out_{mode}_ours.pt"), os.path.join(work, f"out_{mode}_ref.pt"))
    result["output_stats"] = {impl: output_stats(os.path.join(work, f"out_{mode}_{impl}.pt")) for impl in servers}
    return result


def versions(args):
    code = ("import json, sys, torch, detectron2, timm, open_clip, platform;"
            "from importlib.metadata import version as v;"
            "print(json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__,"
            "'detectron2': detectron2.__version__, 'timm': timm.__version__,"
            "'open_clip': (v('open_clip_torch') if 'site-packages' in open_clip.__file__ else"
            " __import__('open_clip.version', fromlist=['x']).__version__ + ' (bundled)'),"
            "'open_clip_file_under_root': not ('site-packages' in open_clip.__file__)}))")
    out = {}
    for impl in ("ours", "ref"):
        r = subprocess.run([args.python, "-c", code], env=worker_env(args, impl), capture_output=True, text=True)
        out[impl] = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-500:]}
    return out


def redaction_map(args):
    """Machine paths -> placeholders, so that the JSON names no folder of this machine."""
    paths = {os.path.abspath(args.workdir): "$WORK", os.path.abspath(args.ours_root): "$OURS",
             os.path.abspath(args.ref_root): "$REF", os.path.dirname(os.path.abspath(args.python)): "$PYTHON_BIN"}
    for path in args.ref_path:
        paths[os.path.abspath(path)] = "$REF_PATH"
    r = subprocess.run(["git", "-C", HERE, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.strip():
        paths[r.stdout.strip()] = "$HARNESS_REPO"
    return sorted(paths.items(), key=lambda kv: -len(kv[0]))


def redact(obj, mapping):
    if isinstance(obj, str):
        for path, name in mapping:
            obj = obj.replace(path, name)
        return obj
    if isinstance(obj, dict):
        return {k: redact(v, mapping) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, mapping) for v in obj]
    return obj


def write_json(results, args):
    with open(args.out, "w") as f:
        json.dump(redact(results, redaction_map(args)), f, indent=1)


def git_head(root):
    if not own_git_checkout(root):
        return None
    r = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def cpu_info():
    """The CPU's model name and whether it has AVX-512 (from /proc/cpuinfo)."""
    info = {"cpu_model": platform.processor(), "cpu_flags_avx512f": False}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                info["cpu_flags_avx512f"] = "avx512f" in line.split(":", 1)[1].split()
                break
    return info


def main():
    args = parse_args()
    args.ref_root = reference_root("sed", args.ref_root, "--ref-root", "SED_REF_ROOT")
    args.ours_root = os.path.abspath(args.ours_root)
    if not os.path.isfile(os.path.join(args.ours_root, "sed", "__init__.py")):
        sys.exit(f"--ours-root: {args.ours_root} is not a checkout of this project (no sed/__init__.py)")
    for path in args.ref_path:
        if not os.path.isdir(path):
            sys.exit(f"--ref-path / SED_REF_PATH: {path} is not a folder")
    args.vocab = os.path.abspath(args.vocab or default_vocabulary(args.ours_root, "ade150.json", "--vocab"))
    if not os.path.isfile(args.vocab):
        sys.exit(f"--vocab: {args.vocab} does not exist")
    args.ref_commit = args.ref_commit or git_head(args.ref_root) or ""
    os.makedirs(args.workdir, exist_ok=True)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    prepare(args)
    work = args.workdir
    load_json = lambda name: json.load(open(os.path.join(work, name)))  # noqa: E731
    results = {
        "date": started,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "processor": platform.processor(),
                    **cpu_info()},
        "versions": versions(args),
        "ours_commit": git_head(args.ours_root),
        "reference": {
            "repository": "xb534/SED", "commit": args.ref_commit or None,
            "file_patches": REFERENCE_FILE_PATCHES, "harness_patches": REFERENCE_HARNESS_PATCHES,
        },
        "settings": {
            "config": "configs/convnextB_768.yaml (each repository's own)",
            "dtype": "float32", "device": "cpu", "threads": args.threads,
            "image": f"1 x 3 x {args.height} x {args.width} uint8 RGB, torch.randint seed {args.seed}",
            "input_dict": ["image", "height", "width"],
            "vocabulary": os.path.basename(args.vocab), "pooling_sizes": [1, 1],
            "warmup": args.warmup, "timed_iters": args.iters, "order": "interleaved ours, ref, ours, ref, ...",
            "fast_topk": args.topk, "modes": args.modes, "weights": "random init of the reference (seed "
            f"{args.seed}, reinit={args.reinit}), loaded into ours through DetectionCheckpointer",
            "text_embeddings": "computed once by ours from the shared weights, injected into both; not timed",
            "grad": "torch.no_grad()",
        },
        "weights": load_json("weights_info.json"),
        "ours_load_and_text": load_json("ours_load_and_text.json"),
        "text_check": load_json("text_check.json"),
    }
    budget = QuietBudget(args)
    results["loadavg_at_start"] = os.getloadavg()
    for mode in args.modes.split(","):
        results[mode] = run_mode(args, mode, budget)
        results["waits"] = {"busy_patterns": args.busy_pattern, "total_waited_s": budget.waited, "log": budget.log}
        write_json(results, args)
    if "plain" in results and "fast" in results:
        import torch

        for impl in ("ours", "ref"):
            plain = torch.load(os.path.join(work, f"out_plain_{impl}.pt"))
            fast = torch.load(os.path.join(work, f"out_fast_{impl}.pt"))
            results["fast"].setdefault("fast_vs_plain_argmax_agreement", {})[impl] = float(
                (plain.argmax(0) == fast.argmax(0)).float().mean())
    results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    write_json(results, args)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
