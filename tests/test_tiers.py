"""The test tiers themselves: tools/test.sh runs a tier on a pytest-xdist worker per CPU, every
worker, with the commands it starts, keeps to its share of the CPUs, and the longest files start first."""
import os
import re
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, available_cpus, share_cpus


def test_share_cpus_splits_the_cpus_among_the_workers(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", ""))  # restored after the test
    monkeypatch.setenv("MKL_NUM_THREADS", os.environ.get("MKL_NUM_THREADS", ""))
    threads = torch.get_num_threads()
    try:
        assert share_cpus(2, 5) == 2 and torch.get_num_threads() == 2
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "2"
        assert share_cpus(8, 5) == 1 and torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(threads)


def test_this_process_and_its_commands_use_the_same_threads():
    """Where OMP_NUM_THREADS is set, torch in the test process uses that many threads, as the
    commands it starts do; under pytest-xdist it is the worker's share of the CPUs."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        assert os.environ["OMP_NUM_THREADS"] == str(max(1, available_cpus() // workers))
    if os.environ.get("OMP_NUM_THREADS"):
        assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])


@pytest.mark.slow
def test_a_tier_runs_on_a_worker_per_cpu():
    """bash tools/test.sh with a selection but no test path: one xdist worker per CPU, where the
    test above passes; with a test path, one process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    name = "test_this_process_and_its_commands_use_the_same_threads"
    # Only the files test_t*.py are collected (each worker imports what it collects).
    tier = subprocess.run(["bash", "tools/test.sh", "-k", name, "--ignore-glob=tests/test_[!t]*.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert tier.returncode == 0, (tier.stdout + tier.stderr)[-3000:]
    cpus = available_cpus()
    if cpus > 1:
        assert re.search(rf"created: {cpus}/{cpus} workers", tier.stdout), tier.stdout[-3000:]
    assert "1 passed" in tier.stdout
    one = subprocess.run(["bash", "tools/test.sh", f"tests/test_tiers.py::{name}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and "1 passed" in one.stdout, (one.stdout + one.stderr)[-3000:]
    assert "workers" not in one.stdout


@pytest.mark.slow
def test_files_slow_as_a_whole_are_collected_first():
    """The files whose every test is slow (module-level mark) come first, in a stable order, so
    that the parallel tiers start the longest files first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    listed = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert listed.returncode == 0, listed.stderr[-3000:]
    files = list(dict.fromkeys(line.split("::")[0] for line in listed.stdout.splitlines() if "::" in line))
    whole = {f"tests/{path.name}" for path in (ROOT / "tests").glob("test_*.py")
             if re.search(r"^pytestmark = pytest\.mark\.slow$", path.read_text(), re.M)}
    assert len(whole) >= 4 and set(files[:len(whole)]) == whole, files
    assert files[:len(whole)] == sorted(whole) and files[len(whole):] == sorted(files[len(whole):])
