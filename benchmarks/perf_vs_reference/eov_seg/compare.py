"""CPU inference speed and memory of the authors' EOV-Seg (nhw649/EOV-Seg) and ours, side by
side, S (R50) and L (ConvNeXt-L): same weights, same text classifier, same image.

    python compare.py --ref-root REF --workdir WORK --out results.json \
        [--impls ref,ours] [--ours-root OURS] [--sizes S,L] [--busy-pattern PATTERN ...]

REF is a checkout of nhw649/EOV-Seg patched by ``../patch_reference.py eov_seg REF`` (or the
environment variable EOV_SEG_REF_ROOT); OURS is the checkout to measure (default: the one
holding this file). See ../README.md.

Steps (each ``worker.py`` task runs in its own process; see its docstring):
  1. once, in WORK (kept and reused unless --fresh): image.pt (one random uint8 RGB image,
     fixed seed, 640x853); per size, the reference's random weights in the released layout,
     its text classifier (authors' text path, timed) -> WORK/<size>/;
  2. per size: wait until no --busy-pattern process runs; start one serving worker per
     implementation; 1 warm-up (outputs saved) + N timed passes each, interleaved
     (ref, ours, ref, ours, ...); then one untimed pass with SEMANTIC_ON (sem_seg saved);
     peak RSS of each worker after build and since build;
  3. if both implementations ran: compare their saved outputs (sem_seg max abs difference,
     panoptic segment agreement) and write the JSON.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # harness_common, patch_reference
import patch_reference  # noqa: E402
from harness_common import ServedWorker, default_vocabulary, own_git_checkout, reference_root  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# this file is benchmarks/perf_vs_reference/eov_seg/compare.py in our repository
OURS_DEFAULT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
WORKER = os.path.join(HERE, "worker.py")
SIZES = {"S": "configs/eov_seg/eov_seg_R50.yaml", "L": "configs/eov_seg/eov_seg_convnext_l.yaml"}
# What the authors' tree needs to run on a CPU (patch_reference.py) and what the harness patches
# at run time (worker.py, install_cpu_patches and build_ref).
REFERENCE_FILE_PATCHES = patch_reference.descriptions("eov_seg")
REFERENCE_HARNESS_PATCHES = [
    "detectron2.layers.ModulatedDeformConv replaced (before importing eov_seg) by a module with the same "
    "parameters computed by torchvision.ops.deform_conv2d(mask=...) (detectron2._C is absent; DCNv2 op)",
    "detectron2.evaluation.fast_eval_api stubbed with pycocotools' COCOeval when it cannot be imported "
    "(needs detectron2._C; imported by the authors' package, unused by the model)",
    "MODEL.OV_HEAD.CLIP_PRETRAINED_WEIGHTS and CLIP_VIT_PRETRAINED_WEIGHTS set to '' (open_clip's random "
    "init under torch.manual_seed(seed)); MODEL.DEVICE cpu",
    "vocabularies registered in MetadataCatalog (stuff_classes = all names, thing_classes, "
    "thing_dataset_id_to_contiguous_id = {i: i for things}) and named in DATASETS.TRAIN / TEST",
    "text classifier computed once and assigned to model.test_text_classifier, the cache that "
    "EOV_SEG.get_text_classifier reads in eval mode (the authors' code caches it too: no patch of the "
    "forward is needed; pre-computing keeps the encoding out of the warm-up and timed passes)",
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-root", default=os.environ.get("EOV_SEG_REF_ROOT"),
                   help="checkout of nhw649/EOV-Seg, patched by ../patch_reference.py "
                        "(default: $EOV_SEG_REF_ROOT)")
    p.add_argument("--ours-root", default=OURS_DEFAULT,
                   help="root of our checkout to measure (default: the one holding this harness, %(default)s)")
    p.add_argument("--impls", default="ref,ours",
                   help="comma list, timing order: ref | ref,ours | ours,ref | ref,ours,ref_reuse "
                        "(ref_reuse: the reference with the same glibc mallopt setting as our CPU_REUSE_MEMORY)")
    p.add_argument("--ours-opt", action="append", default=[],
                   help="extra config 'KEY VALUE' for our model (repeatable)")
    p.add_argument("--sizes", default="S,L", help="comma list of S, L")
    p.add_argument("--ours-config", action="append", default=[],
                   help="SIZE=path relative to --ours-root (default: the reference's file names)")
    p.add_argument("--vocab-dir", default=None,
                   help="folder with ade20k_150.json and coco_panoptic_133.json (lists of {name, isthing}; "
                        "default: our checkout's EOV-Seg vocabularies)")
    p.add_argument("--train-vocab", default=None)
    p.add_argument("--test-vocab", default=None)
    p.add_argument("--python", default=sys.executable, help="interpreter of the workers")
    p.add_argument("--ref-path", action="append", default=[], help="extra PYTHONPATH entry for the reference")
    p.add_argument("--ours-path", action="append", default=[], help="extra PYTHONPATH entry for ours")
    p.add_argument("--workdir", required=True,
                   help="scratch folder for the prepared weights, text classifiers, image and outputs "
                        "(reused by later runs)")
    p.add_argument("--out", required=True, help="results JSON")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="weights (torch.manual_seed before build) and image")
    p.add_argument("--height", type=int, default=640)
    p.add_argument("--width", type=int, default=853)
    p.add_argument("--text-chunks", action="append", default=[],
                   help="SIZE=k: time k chunks of 128 prompts with the authors' code and extrapolate "
                        "(values from the exact short-context path); SIZE=0: the authors' full "
                        "get_text_classifier. Default S=4, L=2")
    p.add_argument("--reinit", choices=("none", "heads"), default="none", help="see worker.py --reinit")
    p.add_argument("--spread-text", action="store_true", help="see worker.py --spread-text")
    p.add_argument("--profile", action="store_true",
                   help="one more untimed pass per implementation with per-part timing hooks (reference only)")
    p.add_argument("--no-semantic-pass", action="store_true", help="skip the untimed SEMANTIC_ON pass")
    p.add_argument("--fresh", action="store_true", help="redo the preparation")
    p.add_argument("--skip-text-timing", action="store_true", help="do not time the authors' text path")
    p.add_argument("--busy-pattern", action="append", default=[],
                   help="wait while a process whose command line contains this runs (pgrep -f)")
    p.add_argument("--poll-s", type=float, default=30.0)
    p.add_argument("--max-wait-s", type=float, default=1200.0)
    return p.parse_args()


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def kv(items, default):
    d = dict(default)
    for it in items:
        k, v = it.split("=", 1)
        d[k] = v
    return d


class Placeholders:
    """Write machine folders as $NAMES in the JSON."""

    def __init__(self, pairs):
        self.pairs = sorted(((os.path.abspath(p), n) for p, n in pairs if p), key=lambda x: -len(x[0]))

    def __call__(self, obj):
        if isinstance(obj, str):
            for p, n in self.pairs:
                obj = obj.replace(p, n)
            return obj
        if isinstance(obj, list):
            return [self(x) for x in obj]
        if isinstance(obj, dict):
            return {self(k): self(v) for k, v in obj.items()}
        return obj


def busy(patterns):
    found = []
    me = str(os.getpid())
    for pat in patterns:
        r = subprocess.run(["pgrep", "-af", pat], capture_output=True, text=True)
        # not this driver, nor another driver of this harness (its command line names the patterns)
        pids = [line.split(None, 1)[0] for line in r.stdout.splitlines()
                if line.split(None, 1)[0] != me and "--busy-pattern" not in line]
        if pids:
            found.append({"pattern": pat, "pids": pids})
    return found


def wait_quiet(args, state):
    waited = 0.0
    while True:
        b = busy(args.busy_pattern)
        if not b:
            return waited
        if state["waited_s"] >= args.max_wait_s:
            log("busy, but the wait budget is spent: going on", b)
            state["ran_busy"].append(b)
            return waited
        log("busy:", b)
        time.sleep(args.poll_s)
        waited += args.poll_s
        state["waited_s"] += args.poll_s


def worker_cmd(args, impl, size, task, extra=()):
    worker_impl = "ours" if impl == "ours" else "ref"
    root = args.ref_root if worker_impl == "ref" else args.ours_root
    config = SIZES[size] if worker_impl == "ref" else kv(args.ours_config, SIZES)[size]
    if impl == "ref_reuse":
        extra = list(extra) + ["--ref-reuse-memory"]
    if impl == "ours" and args.ours_opt:
        extra = list(extra) + ["--ours-opts"] + [t for o in args.ours_opt for t in o.split(None, 1)]
    cmd = [args.python, WORKER, "--impl", worker_impl, "--root", root, "--task", task,
           "--workdir", os.path.join(args.workdir, size), "--config", config,
           "--train-vocab", args.train_vocab, "--test-vocab", args.test_vocab,
           "--seed", str(args.seed), "--threads", str(args.threads)] + list(extra)
    env = dict(os.environ)
    paths = [root] + (args.ref_path if worker_impl == "ref" else args.ours_path)
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["MKL_NUM_THREADS"] = str(args.threads)
    return cmd, env, os.path.abspath(root)  # the authors' package reads prompt files relative to its root


def make_image(args):
    import torch

    path = os.path.join(args.workdir, "image.pt")
    if args.fresh or not os.path.exists(path):
        g = torch.Generator().manual_seed(args.seed)
        img = torch.randint(0, 256, (3, args.height, args.width), generator=g, dtype=torch.uint8)
        torch.save(img, path)
    return path


def time_text(args, size):
    k = kv(args.text_chunks, {"S": "4", "L": "2"})[size]
    cmd, env, cwd = worker_cmd(args, "ref", size, "time-text", ["--text-chunks", k])
    log("time-text", size)
    subprocess.run(cmd, env=env, cwd=cwd, check=True)
    with open(os.path.join(args.workdir, size, "text_timing.json")) as f:
        return json.load(f)


def prepare(args, size):
    d = os.path.join(args.workdir, size)
    os.makedirs(d, exist_ok=True)
    info_path = os.path.join(d, "prepare.json")
    if args.fresh or not os.path.exists(info_path):
        k = kv(args.text_chunks, {"S": "4", "L": "2"})[size]
        cmd, env, cwd = worker_cmd(args, "ref", size, "prepare", ["--text-chunks", k, "--reinit", args.reinit]
                                   + (["--spread-text"] if args.spread_text else []))
        log("prepare", size, " ".join(cmd[1:]))
        subprocess.run(cmd, env=env, cwd=cwd, check=True)
    with open(info_path) as f:
        return json.load(f)


def parameter_usage(weights_path):
    """Parameter counts from the saved state dict (memory-mapped), split into what the image-side
    forward uses and what it does not (text towers: only for the text classifier; the ViT-B-16
    CLIP: only conv1, class/positional embeddings, ln_pre and the first residual block)."""
    import torch

    sd = torch.load(weights_path, map_location="cpu", mmap=True, weights_only=True)["model"]
    vit_used = ("vit_backbone.clip_model.visual.conv1.", "vit_backbone.clip_model.visual.class_embedding",
                "vit_backbone.clip_model.visual.positional_embedding", "vit_backbone.clip_model.visual.ln_pre.",
                "vit_backbone.clip_model.visual.transformer.resblocks.0.")
    out = {"image_side": 0, "text_tower_cnn_clip": 0, "unused_vit_clip": 0, "buffers_and_other": 0}
    for k, v in sd.items():
        n = v.numel()
        if k in ("pixel_mean", "pixel_std") or "running_" in k or "num_batches_tracked" in k or k.endswith("attn_mask") \
                or "criterion" in k:
            out["buffers_and_other"] += n
        elif k.startswith("vit_backbone."):
            out["image_side" if k.startswith(vit_used) else "unused_vit_clip"] += n
        elif k.startswith("cnn_backbone.clip_model.") and not k.startswith("cnn_backbone.clip_model.visual.") \
                and k != "cnn_backbone.clip_model.logit_scale":
            out["text_tower_cnn_clip"] += n
        else:
            out["image_side"] += n
    out["state_dict_entries_total"] = int(sum(v.numel() for v in sd.values()))
    return out


def others_cpu():
    """Other processes using CPU right now (top's %CPU over a short interval), for the record."""
    r = subprocess.run(["top", "-b", "-c", "-n", "2", "-d", "0.5", "-w", "250"], capture_output=True, text=True)
    lines = [l for l in r.stdout.splitlines()]
    # the second iteration's process table: after the last header line
    idx = max(i for i, l in enumerate(lines) if l.strip().startswith("PID"))
    found = []
    for l in lines[idx + 1:]:
        f = l.split(None, 11)
        if len(f) < 12:
            continue
        try:
            cpu = float(f[8])
        except ValueError:
            continue
        if cpu >= 10.0 and f[0] != str(os.getpid()):
            # program and script names only (no machine folders in the JSON)
            found.append({"pid": f[0], "cpu_percent": cpu,
                          "command": " ".join(os.path.basename(t) for t in f[11].split()[:3])})
    return {"loadavg": list(os.getloadavg()), "processes_over_10pct": found}


def stats(xs):
    return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs), "mean_s": statistics.mean(xs),
            "passes_s": xs}


def compare_outputs(a_path, b_path):
    """Agreement of two saved outputs ({panoptic_seg, segments_info[, sem_seg]})."""
    import torch

    a, b = torch.load(a_path, weights_only=False), torch.load(b_path, weights_only=False)
    out = {}
    if "sem_seg" in a and "sem_seg" in b:
        d = (a["sem_seg"] - b["sem_seg"]).abs()
        out["sem_seg_max_abs_diff"] = float(d.max())
        out["sem_seg_mean_abs_diff"] = float(d.mean())
        out["sem_seg_argmax_agreement"] = float((a["sem_seg"].argmax(0) == b["sem_seg"].argmax(0)).float().mean())
    pa, pb = a["panoptic_seg"].long(), b["panoptic_seg"].long()

    def category_map(pan, segs):
        lut = torch.full((int(pan.max()) + 1,), -1, dtype=torch.long)
        for s in segs:
            lut[s["id"]] = s["category_id"]
        return lut[pan]

    out["panoptic_category_pixel_agreement"] = float((category_map(pa, a["segments_info"]) ==
                                                      category_map(pb, b["segments_info"])).float().mean())
    # segment agreement: same partition of the image (ids may differ) and same class per segment
    pairs = torch.stack([pa.flatten(), pb.flatten()], 1).unique(dim=0)
    out["panoptic_partition_identical"] = bool(len(pairs) == len(pa.unique()) == len(pb.unique()))
    out["panoptic_segments"] = [len(a["segments_info"]), len(b["segments_info"])]
    out["panoptic_segments_identical"] = bool(torch.equal(pa, pb) and a["segments_info"] == b["segments_info"])
    return out


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return line.split(":", 1)[1].split()
    return []


def versions():
    import torch
    import torchvision
    import detectron2
    import open_clip
    import timm

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "detectron2": detectron2.__version__, "open_clip": open_clip.__version__, "timm": timm.__version__,
            "torch_num_interop_threads_default": torch.get_num_interop_threads(),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "cpu_model": cpu_model(), "cpu_flags_avx512f": "avx512f" in cpu_flags(),
            "mkldnn": torch.backends.mkldnn.is_available()}


def git_head(root):
    if not own_git_checkout(root):
        return {"head": None, "diff_stat": None}
    r = subprocess.run(["git", "-C", root, "log", "-1", "--format=%H %s"], capture_output=True, text=True)
    d = subprocess.run(["git", "-C", root, "diff", "--stat"], capture_output=True, text=True)
    return {"head": r.stdout.strip(), "diff_stat": d.stdout.strip()}


def main():
    args = parse_args()
    impls = args.impls.split(",")
    args.ref_root = reference_root("eov_seg", args.ref_root, "--ref-root", "EOV_SEG_REF_ROOT")
    if "ours" in impls and not os.path.isfile(os.path.join(args.ours_root, "sed", "__init__.py")):
        sys.exit(f"--ours-root: {args.ours_root} is not a checkout of this project (no sed/__init__.py)")
    for name, default in (("train_vocab", "coco_panoptic_133.json"), ("test_vocab", "ade20k_150.json")):
        if not getattr(args, name):
            setattr(args, name, os.path.join(args.vocab_dir, default) if args.vocab_dir else
                    default_vocabulary(args.ours_root, "eov_seg/" + default, "--" + name.replace("_", "-")))
        if not os.path.isfile(getattr(args, name)):
            sys.exit(f"--{name.replace('_', '-')}: {getattr(args, name)} does not exist")
    for a in ("ref_root", "ours_root", "workdir", "train_vocab", "test_vocab"):
        setattr(args, a, os.path.abspath(getattr(args, a)))
    os.makedirs(args.workdir, exist_ok=True)
    ph = Placeholders([(args.workdir, "$WORK"), (args.ref_root, "$REF"), (args.ours_root, "$OURS"),
                       (os.path.dirname(args.test_vocab), "$VOCAB"), (HERE, "$HARNESS"),
                       (os.path.dirname(os.path.dirname(args.python)), "$PYTHON_ENV")])
    state = {"waited_s": 0.0, "ran_busy": []}
    result = {
        "what": "EOV-Seg CPU inference, authors' code (nhw649/EOV-Seg), random weights",
        "date": datetime.date.today().isoformat(),
        "versions": versions(),
        "reference": {"repo": "nhw649/EOV-Seg", **git_head(args.ref_root),
                      "file_patches": REFERENCE_FILE_PATCHES, "harness_patches": REFERENCE_HARNESS_PATCHES},
        "settings": {
            "impls": impls, "sizes": {s: SIZES[s] for s in args.sizes.split(",")},
            "image": {"shape": [3, args.height, args.width], "dtype": "uint8 random (torch.randint, seed)",
                      "input": "detectron2 dict {'image': float (3,H,W) RGB, 'height': H, 'width': W}",
                      "padded_to": "size_divisibility 32"},
            "batch": 1, "threads": args.threads, "no_grad": True, "dtype": "float32", "device": "cpu",
            "warmup": args.warmup, "iters": args.iters, "seed": args.seed, "busy_patterns": args.busy_pattern,
            "max_wait_s": args.max_wait_s, "reinit": args.reinit, "spread_text": args.spread_text,
            "test": "PANOPTIC_ON True, SEMANTIC_ON False, INSTANCE_ON False (released configs); an extra "
                    "untimed pass with SEMANTIC_ON True saves sem_seg for comparisons",
            "train_vocab": args.train_vocab, "test_vocab": args.test_vocab,
            "peak_rss": "peak_rss_after_build_mb = getrusage ru_maxrss after build + weight load + text "
                        "injection (includes the state dict held during loading); peak_rss_inference_mb = "
                        "VmHWM reset after build (/proc/self/clear_refs 5), read after the warm-up + timed passes; "
                        "peak_rss_incl_extra_passes_mb also covers the untimed SEMANTIC_ON and profile passes",
        },
        "sizes": {},
    }
    make_image(args)
    for size in args.sizes.split(","):
        log("size", size)
        entry = {"prepare": prepare(args, size)}  # not timed for the results: no wait
        entry["parameter_usage"] = parameter_usage(os.path.join(args.workdir, size, "weights_released_layout.pth"))
        entry["busy_after_prepare"] = busy(args.busy_pattern)
        entry["waited_s"] = wait_quiet(args, state)
        entry["text_encoding"] = None if args.skip_text_timing else time_text(args, size)
        entry["busy_after_text_timing"] = busy(args.busy_pattern)
        workers = {}
        try:
            for impl in impls:
                log("start", impl, size)
                workers[impl] = ServedWorker(impl, *worker_cmd(args, impl, size, "serve", ["--semantic-extra"]))
            entry["ready"] = {impl: w.ready for impl, w in workers.items()}
            times = {impl: [] for impl in impls}
            warm = {impl: [] for impl in impls}
            answers = {impl: [] for impl in impls}
            entry["machine_before_passes"] = others_cpu()
            for i in range(args.warmup + args.iters):
                for impl in impls:
                    save = os.path.join(args.workdir, size, f"out_{impl}_panoptic.pt") if i == 0 else None
                    a = workers[impl].ask(cmd="forward", save=save)
                    (warm if i < args.warmup else times)[impl].append(a["seconds"])
                    answers[impl].append(a)
                    log(size, impl, "pass", i, f"{a['seconds']:.2f}s", "segments", a["num_segments"])
            entry["machine_after_passes"] = others_cpu()
            semantic = {}
            if not args.no_semantic_pass:
                for impl in impls:
                    save = os.path.join(args.workdir, size, f"out_{impl}_semantic.pt")
                    semantic[impl] = workers[impl].ask(cmd="semantic", save=save)
            loose = {}
            if not args.no_semantic_pass:
                for impl in impls:
                    save = os.path.join(args.workdir, size, f"out_{impl}_loose.pt")
                    loose[impl] = workers[impl].ask(cmd="loose", save=save)
            profiles = {}
            if args.profile:
                for impl in impls:
                    a = workers[impl].ask(cmd="profile")
                    profiles[impl] = {"seconds": a.get("seconds"), "cpu_s": a.get("cpu_s"),
                                      "parts_s": a.get("profile_s")}
            byes = {impl: w.close() for impl, w in workers.items()}
        finally:
            for w in workers.values():
                if w.proc.poll() is None:
                    w.proc.kill()
        during = busy(args.busy_pattern)
        entry["busy_after_passes"] = during
        entry["impls"] = {}
        for impl in impls:
            r = workers[impl].ready
            entry["impls"][impl] = {
                **stats(times[impl]), "warmup_s": warm[impl],
                "cpu_s_passes": [a.get("cpu_s") for a in answers[impl]],
                "loadavg1_passes": [[a.get("loadavg1_before"), a.get("loadavg1_after")] for a in answers[impl]],
                "build_s": r["build_s"], "parameters": r["parameters"], "load": r["load"],
                "rss_after_build_mb": r["rss_after_build_mb"],
                "peak_rss_after_build_mb": r["peak_rss_after_build_mb"],
                "peak_rss_inference_mb": answers[impl][-1]["peak_rss_since_build_mb"],
                "peak_rss_incl_extra_passes_mb": byes[impl]["peak_rss_since_build_mb"],
                "peak_rss_process_mb": byes[impl]["peak_rss_process_mb"],
                "outputs": {k: answers[impl][0][k] for k in ("num_segments", "segment_classes", "pixels_unassigned")},
                "semantic_pass": semantic.get(impl),
                "panoptic_overlap_threshold_0_pass": loose.get(impl),
                "profile_pass": profiles.get(impl),
            }
        pairs = [(a, "ours") for a in impls if a != "ours"] if "ours" in impls else []
        if len(impls) == 2 and not pairs:
            pairs = [tuple(impls)]
        entry["ratio"] = {}
        entry["outputs_compared"] = {}
        for a, b in pairs:
            ta, tb = times[a], times[b]
            # speed-up of b over a, pass by pass (a's pass i and b's pass i ran one after the other)
            entry["ratio"][f"{a}_over_{b}_pairwise"] = stats([x / y for x, y in zip(ta, tb)])
            entry["ratio"][f"{a}_over_{b}_of_medians"] = statistics.median(ta) / statistics.median(tb)
            cmp = {"panoptic_pass": compare_outputs(os.path.join(args.workdir, size, f"out_{a}_panoptic.pt"),
                                                    os.path.join(args.workdir, size, f"out_{b}_panoptic.pt"))}
            if not args.no_semantic_pass:
                cmp["semantic_pass"] = compare_outputs(
                    os.path.join(args.workdir, size, f"out_{a}_semantic.pt"),
                    os.path.join(args.workdir, size, f"out_{b}_semantic.pt"))
                cmp["panoptic_overlap_threshold_0_pass"] = compare_outputs(
                    os.path.join(args.workdir, size, f"out_{a}_loose.pt"),
                    os.path.join(args.workdir, size, f"out_{b}_loose.pt"))
            entry["outputs_compared"][f"{a}_vs_{b}"] = cmp
        result["sizes"][size] = entry
        result["busy_wait_s"] = state["waited_s"]
        result["ran_while_busy"] = state["ran_busy"]
        with open(args.out, "w") as f:
            json.dump(ph(result), f, indent=1)
        log("wrote", args.out)


if __name__ == "__main__":
    main()
