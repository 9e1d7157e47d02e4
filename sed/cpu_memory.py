"""Reuse of freed memory on the CPU (``CPU_REUSE_MEMORY``), set once per process by the entry
points (``train_net.py``, the predictor, ``tools/benchmark.py``).

glibc serves every allocation above 32 MB, which includes most activations of a 640x853 image,
with fresh pages from the system and returns them when the tensor is freed: the next tensor of
that size faults its pages in again, one by one: for EOV-Seg-S, hundreds of thousands of page
faults per image. Serving large allocations from the process heap and never trimming it keeps
the pages for the next image instead; the resident memory then stays at its peak, which grows
a little (docs/benchmarks.md, EOV-Seg inference).
"""
import ctypes
import ctypes.util
import logging

import torch

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

logger = logging.getLogger(__name__)


def reuse_freed_memory() -> bool:
    """Keep freed memory in this process's heap for later allocations (glibc's ``mallopt``:
    no ``mmap`` for large blocks, no trimming). Returns whether the C library took the setting
    (False on other C libraries and systems, which are left as they are)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.gnu_get_libc_version  # glibc only: others define mallopt with other meanings or not at all
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))  # -1: never trim


def configure_cpu_memory(cfg) -> bool:
    """Apply ``cfg.CPU_REUSE_MEMORY`` to this process when the model runs on the CPU
    (``MODEL.DEVICE``); GPU runs keep the C library's defaults. Returns whether it applied."""
    if not cfg.CPU_REUSE_MEMORY or torch.device(cfg.MODEL.DEVICE).type != "cpu":
        return False
    applied = reuse_freed_memory()
    if not applied:
        logger.info("CPU_REUSE_MEMORY: this C library is not glibc; its allocator is left as it is")
    return applied
