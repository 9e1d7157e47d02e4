"""What both workers (``eov_seg/worker.py``, ``sed/worker.py``) do alike: logging, memory
readings, building a detectron2 model from a checkout's package, loading our checkpoints with
a report of their keys. Imported by the reference's workers too, so nothing here imports a
model package at module level."""
import os
import resource
import sys


def log(*a):
    print(*a, file=sys.stderr, flush=True)


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
