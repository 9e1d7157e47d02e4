"""run.sh / eval.sh / train_net.py end to end on the embedded default dataset."""
import json
import re

import pytest

from helpers import FAST, kill_when, sh


@pytest.mark.parametrize("script", ["run.sh", "eval.sh"])
@pytest.mark.parametrize("args, message", [
    ([], "expected at least 3 arguments"),
    (["configs/nope.yaml", "1", "out"], "config file 'configs/nope.yaml' not found"),
    (["configs/synthetic_tiny.yaml", "two", "out"], "NUM_GPUS must be a whole number"),
    (["configs/synthetic_tiny.yaml", "0", "out", "MODEL.WEIGHTS"], "KEY VALUE pairs"),
])
def test_misuse_prints_usage_and_fails(script, args, message):
    result = sh(script, *args)
    assert result.returncode != 0
    assert message in result.stderr and "usage: sh " + script in result.stderr


@pytest.mark.slow
def test_train_then_resume_then_evaluate(tmp_path, env_with_datasets):
    out = tmp_path / "out"
    result = sh("run.sh", "configs/synthetic_tiny.yaml", "0", str(out), *FAST, env=env_with_datasets)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert re.search(r"\|\s+mIoU\s+\|\s+fwIoU\s+\|\s+mACC\s+\|\s+pACC", log)
    assert re.search(r"\| red circle\s+\|\s+[\d.]+ \|", log)
    assert re.search(r"eta: \d+:\d\d:\d\d\s+iter: \d+", log)  # progress with its ETA
    # The console leaves the environment, config and raw metrics dumps to the log file.
    file_log = (out / "log.txt").read_text()
    for dump in ("Environment info:", "Running with full config:", "Contents of args.config_file", "OrderedDict(["):
        assert dump not in log and dump in file_log
    assert f"full config: {out / 'log.txt'}" in log
    assert (out / "model_final.pth").is_file() and (out / "last_checkpoint").read_text() == "model_final.pth"
    metrics = json.loads((out / "results.json").read_text())["sed_synthetic_val"]["sem_seg"]
    assert {"mIoU", "fwIoU", "mACC", "pACC", "IoU-red circle"} <= set(metrics)
    losses = [json.loads(line)["total_loss"] for line in (out / "metrics.json").read_text().splitlines()
              if "total_loss" in line]
    assert losses

    # Resume from an intermediate checkpoint: the run continues to MAX_ITER. Killed during its
    # final evaluation, the same command trains nothing again and evaluates only the images
    # whose evaluation it had not saved.
    (out / "last_checkpoint").write_text("model_0000002.pth")
    (out / "model_final.pth").unlink()
    partial = out / "inference" / "sed_synthetic_val" / "partial"
    args = ["run.sh", "configs/synthetic_tiny.yaml", "0", str(out), *FAST, "TEST.PARTIAL_EVERY", "1"]
    kill_when(["sh", *args], env_with_datasets, lambda: partial.is_dir() and len(list(partial.glob("*.chunk"))) >= 2)
    assert "Starting training from iteration 3" in (out / "log.txt").read_text()
    assert (out / "model_final.pth").is_file()
    saved = len(list(partial.glob("*.chunk")))
    result = sh(*args, env=env_with_datasets)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "Starting training from iteration 6" in log
    assert f"Resuming the evaluation on sed_synthetic_val: {saved} of 6 images done" in log
    assert f"Start inference on {6 - saved} batches" in log
    assert not partial.exists() and "IoU-red circle" in json.loads((out / "results.json").read_text())["sed_synthetic_val"]["sem_seg"]


def test_missing_dataset_fails_clearly(tmp_path):
    env = {"DETECTRON2_DATASETS": str(tmp_path / "none"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = sh("run.sh", "configs/synthetic_tiny.yaml", "0", str(tmp_path / "out"), *FAST, env=env)
    assert result.returncode != 0
    assert "sed_synthetic/images/train does not exist" in result.stderr
    assert "python datasets/prepare_synthetic.py" in result.stderr


@pytest.mark.slow
def test_eval_sh_reports_every_benchmark(tmp_path, env_with_datasets):
    out = tmp_path / "out"
    result = sh("eval.sh", "configs/synthetic_tiny.yaml", "0", str(out), env=env_with_datasets)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ["A-847", "PC-459", "A-150", "PC-59", "PAS-20", "PAS-20b"]:
        assert f"| {name}" in result.stdout
        assert f"eval.sh: {name} skipped: dataset " in result.stderr
    assert result.stdout.count("missing") == 6 * 4
    assert (out / "eval" / "summary.csv").is_file() and (out / "eval" / "summary.md").is_file()
