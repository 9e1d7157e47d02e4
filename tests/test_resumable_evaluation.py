"""Evaluation that survives a kill (sed/data/resumable_evaluation.py): chunk files that detect
their own damage, fingerprints and eval.sh stamps that follow what a run computes, and two
processes killed part-way, resumed over damaged chunks, reporting exactly what one
uninterrupted process reports."""
import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import get_cfg

from helpers import ROOT, kill_when
from sed import add_project_config
from sed.data.resumable_evaluation import (CorruptChunk, evaluation_config, fingerprint, load_chunks, read_chunk,
                                           write_chunk)
from sed.family import get_family
from sed.tools import eval_summary

EVAL_ONLY = [sys.executable, "train_net.py", "--config-file", "configs/synthetic_tiny.yaml", "--eval-only"]
SINGLE = ["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single", "DATALOADER.NUM_WORKERS", "0"]


def project_cfg(*opts):
    cfg = get_cfg()
    add_project_config(cfg)
    cfg.merge_from_list(list(opts))
    return cfg


def test_chunk_round_trip_and_every_kind_of_damage_detected(tmp_path):
    path = str(tmp_path / "0000000-0000001.chunk")
    content = {"fingerprint": "f", "indices": [0, 1], "states": [{"_predictions": [b"\x89PNG", {"id": 3}]}]}
    write_chunk(path, content)
    assert read_chunk(path) == content and os.listdir(tmp_path) == ["0000000-0000001.chunk"]
    data = open(path, "rb").read()
    for damaged, message in [(data[:-7], "truncated"), (data[:20], "shorter than the"),
                             (data[:-1] + bytes([data[-1] ^ 1]), "SHA-256 differs"), (b"X" + data[1:], "magic")]:
        open(path, "wb").write(damaged)
        with pytest.raises(CorruptChunk, match=message):
            read_chunk(path)


def test_load_chunks_keeps_only_sound_chunks_of_this_fingerprint(tmp_path):
    for first, fp in [(0, "this"), (2, "other"), (4, "this"), (6, "this")]:
        write_chunk(str(tmp_path / f"{first:07d}-{first + 1:07d}.chunk"), {"fingerprint": fp, "indices": [first, first + 1],
                                                                         "states": []})
    truncated = tmp_path / "0000004-0000005.chunk"
    truncated.write_bytes(truncated.read_bytes()[:-3])
    (tmp_path / "0000008-0000009.chunk.tmp123").write_bytes(b"SEDPART1")  # killed during its write
    chunks = load_chunks(str(tmp_path), "this")
    assert [c["indices"] for c in chunks] == [[0, 1], [6, 7]]
    assert sorted(os.listdir(tmp_path)) == ["0000000-0000001.chunk", "0000006-0000007.chunk"]


def test_fingerprint_follows_weights_config_and_images():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    dataset = [{"file_name": "a.jpg"}, {"file_name": "b.jpg"}]
    base = fingerprint(project_cfg(), "val", dataset, model)
    # Where and how often the evaluation writes does not change what it computes.
    assert fingerprint(project_cfg("OUTPUT_DIR", "elsewhere", "TEST.PARTIAL_EVERY", "3", "TEST.KEEP_PARTIAL", "True",
                                   "DATALOADER.NUM_WORKERS", "7", "MODEL.WEIGHTS", "x.pth"), "val", dataset, model) == base
    assert fingerprint(project_cfg("TEST.TOPK", "3"), "val", dataset, model) != base
    assert fingerprint(project_cfg(), "val", dataset[::-1], model) != base
    assert fingerprint(project_cfg(), "test", dataset, model) != base
    with torch.no_grad():
        model.bias[0] += 1e-6
    assert fingerprint(project_cfg(), "val", dataset, model) != base
    assert "PARTIAL_EVERY" not in evaluation_config(project_cfg()) and "TOPK" in evaluation_config(project_cfg())


def test_eval_sh_stamp_follows_weights_file_config_and_overrides(tmp_path):
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"weights")
    config = str(ROOT / "configs" / "synthetic_tiny.yaml")
    benchmark = get_family("SED").published[0]
    opts = ["MODEL.WEIGHTS", str(weights), "MODEL.DEVICE", "cpu"]
    base = eval_summary.stamp(config, benchmark, opts)
    assert eval_summary.stamp(config, benchmark, opts) == base
    assert eval_summary.stamp(config, benchmark, opts + ["TEST.PARTIAL_EVERY", "5"]) == base
    assert eval_summary.stamp(config, benchmark, opts + ["TEST.FAST_INFERENCE", "True"]) != base
    assert eval_summary.stamp(config, get_family("SED").published[1], opts) != base
    assert eval_summary.stamp(str(ROOT / "configs" / "convnextB_768.yaml"), benchmark, opts) != base
    os.utime(weights, ns=(0, 0))  # the same name and size, another modification time
    assert eval_summary.stamp(config, benchmark, opts) != base
    with pytest.raises(SystemExit, match="do not apply to .*synthetic_tiny.yaml: .*MODEL.NOPE is not a config key"):
        eval_summary.stamp(config, benchmark, opts + ["MODEL.NOPE", "1"])


@pytest.fixture(scope="module")
def reference(weights, synthetic_root, tmp_path_factory):
    """One uninterrupted process, nothing saved: results.json of the generated val split."""
    home = tmp_path_factory.mktemp("reference")
    out = home / "out"
    result = subprocess.run([*EVAL_ONLY, "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", str(weights), *SINGLE,
                             "TEST.PARTIAL_EVERY", "0"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, DETECTRON2_DATASETS=str(synthetic_root), HOME=str(home)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (out / "inference" / "sed_synthetic_val" / "partial").exists()
    return json.loads((out / "results.json").read_text())


def chunk_indices(folder):
    return {name: read_chunk(str(folder / name))["indices"] for name in os.listdir(folder) if name.endswith(".chunk")}


@pytest.mark.slow
def test_two_processes_killed_then_resumed_over_a_damaged_chunk_equal_one_process(
        reference, weights, env_with_datasets, tmp_path):
    """The generated val split has 6 images: process 0 evaluates images 0-2, process 1 images 3-5.
    Then one process resumes what the two saved."""
    out = tmp_path / "out"
    partial = out / "inference" / "sed_synthetic_val" / "partial"
    opts = ["OUTPUT_DIR", str(out), "MODEL.WEIGHTS", str(weights), *SINGLE, "TEST.PARTIAL_EVERY", "1"]
    cmd = [*EVAL_ONLY, "--num-gpus", "2", "--dist-url", "auto", *opts]

    def both_processes_saved():
        names = os.listdir(partial) if partial.is_dir() else []
        return {int(n[:7]) < 3 for n in names if n.endswith(".chunk")} == {True, False}

    kill_when(cmd, env_with_datasets, both_processes_saved)
    assert not (out / "results.json").exists()
    saved = chunk_indices(partial)
    assert 2 <= len(saved) < 6 and all(len(indices) == 1 for indices in saved.values())
    # A kill during a write leaves a temporary file; a damaged disk, a truncated chunk.
    damaged = sorted(saved)[0]
    (partial / f"{damaged}.tmp999").write_bytes((partial / damaged).read_bytes()[:40])
    (partial / damaged).write_bytes((partial / damaged).read_bytes()[:-5])
    kept = {name: indices for name, indices in saved.items() if name != damaged}

    result = subprocess.run([*cmd, "TEST.KEEP_PARTIAL", "True"], cwd=ROOT, env=env_with_datasets, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"{damaged} is unusable (truncated:" in log and f"Removing {partial / damaged}.tmp999" in log
    assert f"{len(kept)} of 6 images done in {partial}, {6 - len(kept)} to go" in log
    assert json.loads((out / "results.json").read_text()) == reference
    # What the resumed run evaluated: exactly the images no sound chunk held, the damaged one's included.
    evaluated = [i for name, indices in chunk_indices(partial).items() if name not in kept for i in indices]
    assert sorted(evaluated) == sorted(set(range(6)) - {i for indices in kept.values() for i in indices})
    assert damaged in chunk_indices(partial)  # evaluated again, saved sound

    # One process resumes what two saved (here: all but images 1 and 4), and cleans up after itself.
    for name, indices in chunk_indices(partial).items():
        if indices[0] in (1, 4):
            (partial / name).unlink()
    (out / "results.json").unlink()
    result = subprocess.run([*EVAL_ONLY, *opts], cwd=ROOT, env=env_with_datasets, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "4 of 6 images done" in log and "Start inference on 2 batches" in log
    assert json.loads((out / "results.json").read_text()) == reference and not partial.exists()
