"""CPU_REUSE_MEMORY: freed tensors' pages are reused instead of being faulted in again."""
import platform
import subprocess
import sys

import pytest

from helpers import eov_cfg
from sed import cpu_memory
from sed.cpu_memory import configure_cpu_memory

# A child process runs a small convolutional network, whose activations are larger than glibc's
# 32 MB mmap threshold, four times and prints the page faults of the last pass (the heap
# settles in the first two).
FAULTS_OF_LAST_PASS = """
import importlib.util, resource, sys, torch
spec = importlib.util.spec_from_file_location("cpu_memory", sys.argv[2])  # without sed's imports
cpu_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_memory)
if sys.argv[1] == "reuse":
    assert cpu_memory.reuse_freed_memory()
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                          torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(16, 8, 1))
image = torch.randn(1, 3, 768, 768)
with torch.no_grad():
    for _ in range(3):
        net(image)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(image)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def last_pass_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_LAST_PASS, mode, cpu_memory.__file__],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                    reason="the setting is glibc's (mallopt); other C libraries keep their defaults")
def test_reused_memory_is_not_faulted_in_again():
    assert last_pass_faults("default") > 30_000  # 37 MB activations: pages of 4 KB, fresh from the system
    assert last_pass_faults("reuse") < 1_000


def test_setting_applies_to_cpu_runs_only():
    cfg = eov_cfg()
    assert configure_cpu_memory(cfg) == (platform.libc_ver()[0] == "glibc")
    cfg.MODEL.DEVICE = "cuda"
    assert not configure_cpu_memory(cfg)
    cfg.MODEL.DEVICE, cfg.CPU_REUSE_MEMORY = "cpu", False
    assert not configure_cpu_memory(cfg)
