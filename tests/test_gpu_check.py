"""tools/gpu_check.sh --dry-run: the GPU check end to end on the CPU (tiny configs and sizes)."""
import json
import subprocess
import xml.etree.ElementTree as ET

import pytest
import torch

from helpers import ROOT

pytestmark = pytest.mark.slow

RUNS = 29  # 16 SED inference, 4 EOV-Seg, 3 compiled, 2 A-847 memory, 4 training
# A dry run skips what would repeat another run on the tiny configs: SED-L's and EOV-Seg-L's
# runs (the tiny config of their family), two of the three compiled ones.
DRY_RUN_SKIPS = 8 + 2 + 1 + 2


def test_dry_run_passes_and_writes_every_json(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["cuda_tier"]["status"] == "passed"
    tier = ET.parse(out / "cuda_tier.xml").getroot().find("testsuite")
    assert int(tier.get("tests")) >= 15 and int(tier.get("failures")) == int(tier.get("errors")) == 0
    assert len({r["name"] for r in summary["runs"]}) == len(summary["runs"]) == RUNS
    # in order of importance: the headline inference of each model first
    headline = ["sed_b_ade150_b1_float32", "eov_seg_s_ade150_panoptic_b1_float32"]
    assert [r["name"] for r in summary["runs"][:2]] == headline
    ran = [r for r in summary["runs"] if r["status"] != "not run (dry run)"]
    skipped = {r["name"] for r in summary["runs"]} - {r["name"] for r in ran}
    assert len(ran) == RUNS - DRY_RUN_SKIPS and all(r["status"] == "ok" for r in ran), ran
    assert all(n.startswith(("sed_l_", "eov_seg_l_")) or "_compiled_" in n for n in skipped), skipped
    for run in ran:
        figures = json.loads((out / f"{run['name']}.json").read_text())
        assert figures["device"] == "cpu" and run["peak_memory_mb"] == figures["peak_memory_mb"] > 0
        if "_train_" in run["name"]:
            assert figures["mode"] == "train" and run["iterations_per_s"] > 0
        else:
            assert figures["mode"] == "inference" and run["ms_per_image"] > 0
        if "bfloat16" in run["name"]:
            assert 0 <= run.get("argmax_agreement_vs_float32", run.get("panoptic_class_agreement_vs_float32")) <= 1
        if "_compiled_" in run["name"]:
            assert run["compiled"]["ms_per_image"] > 0 and run["compiled"]["graphs"] == 1
            assert run["compiled"]["argmax_agreement_vs_eager"] == 1
    flops = [r for r in summary["runs"] if "gflops_per_image" in r]
    assert {r["name"] for r in flops} >= {"sed_b_ade150_b1_float32", "eov_seg_s_ade150_panoptic_b1_float32"}
    assert all(r["achieved_tflops"] > 0 for r in flops)
    environment = json.loads((out / "environment.json").read_text())
    assert environment["torch"] and environment["detectron2"] and environment["device"] == "cpu"
    log = (out / "gpu_check.log").read_text()
    assert log.count("=== ") == RUNS - DRY_RUN_SKIPS


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the real check would run (minutes)")
def test_without_a_gpu_the_real_check_says_so(tmp_path):
    result = subprocess.run(["bash", "tools/gpu_check.sh", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "no CUDA device" in result.stderr and "--dry-run" in result.stderr
