"""What both harnesses do alike. The workers (``eov_seg/worker.py``, ``sed/worker.py``):
logging, memory readings, building a detectron2 model from a checkout's package, loading our
checkpoints with a report of their keys, the serve loop's first and last lines. The drivers
(``compare.py``): their checked path arguments and a served worker's end of that loop.
Imported by the reference's workers too, so nothing here imports a model package at module
level."""
import json
import os
import resource
import subprocess
import sys


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the drivers' arguments
def reference_root(name, root, option, env):
    """The authors' checkout named by ``option`` (default: the environment variable ``env``),
    absolute; the driver stops with a message unless it exists, is that repository and carries
    the edits of ``patch_reference.py``."""
    import patch_reference

    repo = patch_reference.PATCHES[name][0]
    if not root:
        sys.exit(f"{option} or the environment variable {env}: the folder of a checkout of {repo} "
                 f"(see README.md next to patch_reference.py)")
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        sys.exit(f"{option} / {env}: {root} is not a folder")
    problems = patch_reference.check(name, root)
    if problems:
        sys.exit(f"{option} / {env}:\n  " + "\n  ".join(problems))
    return root


def own_git_checkout(root):
    """Whether ``root`` is the top of a git checkout (not a folder inside another one), so that
    its ``git log`` describes it."""
    r = subprocess.run(["git", "-C", root, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    return r.returncode == 0 and os.path.realpath(r.stdout.strip()) == os.path.realpath(root)


def default_vocabulary(ours_root, relative, option):
    """One of our checkout's vocabulary files (``relative`` to its vocabulary folder, which is
    ``sed/vocabularies``, or ``datasets`` in older checkouts); the driver stops with a message
    naming ``option`` if neither exists."""
    candidates = [os.path.join(ours_root, folder, relative) for folder in ("sed/vocabularies", "datasets")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    sys.exit(f"{option}: none of {', '.join(candidates)} exists; give the file")


def rss_mb(field):
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak_rss():
    """Reset VmHWM (Linux >= 4.0) so that later peaks exclude model building."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def ru_maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_from(package, root, add_config, config_file, opts, *, seed=None, before_build=None):
    """detectron2's ``build_model`` for ``config_file`` of the checkout at ``root``, whose
    ``package`` (already imported) must come from that checkout.

    Args:
        add_config: functions adding the package's config keys.
        opts: KEY VALUE list merged after the file.
        seed: torch's seed before building (random weights), if any.
        before_build: called with the frozen config before building.
    Returns:
        (cfg, model in eval mode).
    """
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    root = os.path.abspath(root)
    if not os.path.abspath(package.__file__).startswith(root):
        raise RuntimeError(f"{package.__name__} comes from {package.__file__}, not {root}")
    cfg = get_cfg()
    for add in add_config:
        add(cfg)
    cfg.merge_from_file(os.path.join(root, config_file))
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    if before_build is not None:
        before_build(cfg)
    if seed is not None:
        torch.manual_seed(seed)
    return cfg, build_model(cfg).eval()


def configure_ours_cpu_memory(cfg):
    """``CPU_REUSE_MEMORY``, as this project's entry points (tools/benchmark.py, the
    predictor, train_net.py) apply it."""
    from sed.cpu_memory import configure_cpu_memory

    log(f"ours: CPU_REUSE_MEMORY={cfg.CPU_REUSE_MEMORY} applied={configure_cpu_memory(cfg)}")


def ours_load_weights(model, path):
    """Load a released-layout checkpoint through DetectionCheckpointer; return its
    missing / unexpected keys and shape mismatches."""
    from detectron2.checkpoint import DetectionCheckpointer

    checkpointer = DetectionCheckpointer(model)
    found = {}
    original = checkpointer._load_model

    def record(checkpoint):
        incompatible = original(checkpoint)
        found["missing"] = list(incompatible.missing_keys)
        found["unexpected"] = list(incompatible.unexpected_keys)
        found["incorrect_shapes"] = [list(map(str, s)) for s in incompatible.incorrect_shapes]
        return incompatible

    checkpointer._load_model = record
    checkpointer.load(path)
    return found


def memory_now():
    """The serve loop's memory fields after a pass: peak since the reset after building, and now."""
    return {"peak_rss_since_build_mb": rss_mb("VmHWM"), "rss_mb": rss_mb("VmRSS")}


def announce_ready(proto, impl, model, build_s, load_info, **memory):
    """The serve loop's first line on the protocol file: the built model (build time, load
    report, parameters, threads) and the ``memory`` readings after building."""
    import torch

    proto.write(json.dumps({
        "ready": True, "impl": impl, "build_s": build_s, "load": load_info, **memory,
        "threads": torch.get_num_threads(), "parameters": int(sum(p.numel() for p in model.parameters())),
    }) + "\n")


class ServedWorker:
    """The driver's end of a worker's serve loop: the worker started (``cmd`` with ``env`` in
    ``cwd``) and its ready line read (``ready``); ``ask`` sends one JSON command and returns
    the answer; ``close`` ends the loop and returns the goodbye line."""

    def __init__(self, impl, cmd, env, cwd=None):
        self.impl = impl
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.ready = self._read()
        if not self.ready.get("ready"):
            raise RuntimeError(f"{impl} worker did not start: {self.ready}")

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.impl} worker exited (rc {self.proc.wait()})")
        return json.loads(line)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        bye = self.ask(cmd="quit")
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        return bye


def say_goodbye(proto):
    """The serve loop's last line on the protocol file: the peaks after all passes."""
    proto.write(json.dumps({"bye": True, "peak_rss_since_build_mb": rss_mb("VmHWM"),
                            "peak_rss_process_mb": ru_maxrss_mb()}) + "\n")


def run_task(args, tasks):
    """A worker's entry point: ``--workdir`` made, torch's threads set, ``tasks[args.task]`` run."""
    import torch

    os.makedirs(args.workdir, exist_ok=True)
    torch.set_num_threads(args.threads)
    tasks[args.task](args)


def protocol_file():
    """A private copy of stdout for the serve loop's answers; anything else printed goes to
    stderr from now on."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return proto


def reference_reuse_memory():
    """glibc's mallopt as our ``CPU_REUSE_MEMORY`` sets it (``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD``
    -1), for timing the reference with it too (``--ref-reuse-memory``)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = libc.mallopt(-4, 0) and libc.mallopt(-1, -1)
    log(f"ref: glibc mallopt (as our CPU_REUSE_MEMORY) applied={bool(ok)}")


def reference_load_weights(model, path):
    """The authors' model: ``load_state_dict(strict=True)`` of ``{"model": state_dict}``; its
    missing / unexpected keys."""
    import torch

    result = model.load_state_dict(torch.load(path, map_location="cpu")["model"], strict=True)
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
