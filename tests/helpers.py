"""What several test files share, other than pytest fixtures (those are in conftest.py): the
repository's paths, config and model builders, the released-format fixtures of ../shared, the
commands the tests run (train_net.py, run.sh / eval.sh, the prepare scripts) and a run killed at
a given moment, image files, and an independent panoptic-quality computation. Test files import
from here; none imports another."""
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances
from PIL import Image

from sed import add_project_config, add_sed_config
from sed.resources import vocabulary_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SED_FIXTURE = SHARED / "fixtures" / "sed_official_tiny"
EOV_FIXTURE = SHARED / "fixtures" / "eov_seg_tiny"
EOV_FIXTURE_CONFIG = ROOT / "configs" / "eov_seg" / "eov_seg_convnext_l.yaml"
# The EOV-Seg fixture's two output settings (MODEL.EOV_SEG.TEST switches); its reference ran both.
EOV_FIXTURE_MODES = {
    "semantic": {"SEMANTIC_ON": True, "PANOPTIC_ON": False, "INSTANCE_ON": False},
    "panoptic": {"SEMANTIC_ON": True, "PANOPTIC_ON": True, "INSTANCE_ON": True},
}
TINY_CLIP = str(ROOT / "sed" / "model_configs" / "sed_tiny.json")
# configs/synthetic_tiny.yaml's SED quickly: one prompt template, no text-embedding disk cache.
TINY_TEXT = ["MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single", "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", ""]
# configs/synthetic_tiny.yaml trained in seconds: 6 iterations on 96-pixel crops, a checkpoint
# every 3, evaluated at the end.
FAST = ["SOLVER.MAX_ITER", "6", "TEST.EVAL_PERIOD", "6", "SOLVER.CHECKPOINT_PERIOD", "3",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.CROP.SIZE", "(96,96)", "INPUT.MIN_SIZE_TEST", "96",
        "DATALOADER.NUM_WORKERS", "0"]
# pip without network: no configuration file, no index (an unreachable one), no find-links.
NO_NETWORK = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
              "PIP_FIND_LINKS": ""}


def available_cpus() -> int:
    """The CPUs this process may run on (as nproc counts them, without its OMP_NUM_THREADS rule)."""
    return len(os.sched_getaffinity(0))


def share_cpus(workers: int, cpus: int) -> int:
    """Give this process and the commands it starts ``cpus // workers`` threads (at least one)
    and return that: OpenMP threads beyond the cores spin against each other's processes and
    slow training many times over."""
    threads = max(1, cpus // workers)
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    torch.set_num_threads(threads)
    return threads


def load_repository_tool(name: str):
    """The module of ``tools/NAME.py``, a repository tool outside the package (the install
    bundle, the browser driver), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- configs, random models, inputs ---------------------------------------------------------------


def make_cfg(*opts, config_file=None):
    """An SED config on the CPU (``config_file`` merged if given, then ``opts``), without the
    text-embedding disk cache."""
    cfg = get_cfg()
    add_sed_config(cfg)
    if config_file:
        cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "SED", "MODEL.DEVICE", "cpu",
                         "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", "", *opts])
    return cfg


def tiny_model(*opts, seed=0):
    """A randomly initialised SED on the tiny CLIP, in eval mode."""
    torch.manual_seed(seed)
    cfg = make_cfg(
        "MODEL.ENC.CLIP_MODEL_NAME", TINY_CLIP, "MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "",
        "MODEL.ENC.IMAGE_SIZE", "256",
        "MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", str(vocabulary_path("synthetic.json")),
        "MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", str(vocabulary_path("voc20.json")),
        "MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single", *opts,
    )
    return build_model(cfg).eval()


def eov_cfg(*opts, config_file=ROOT / "configs" / "eov_seg" / "eov_seg_R50.yaml"):
    """An EOV-Seg config on the CPU, without the text-embedding disk cache."""
    cfg = get_cfg()
    add_project_config(cfg)
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.EOV_SEG.TEXT_CACHE_DIR", "", *opts])
    return cfg


def eov_tiny_model(train_json, test_json, *opts, seed=0):
    """A randomly initialised EOV-Seg on tiny ResNet and ViT CLIPs (the released R50 config's
    settings otherwise, smaller widths), in eval mode."""
    torch.manual_seed(seed)
    cfg = eov_cfg(
        "MODEL.OV_HEAD.CLIP_MODEL_NAME", str(ROOT / "sed" / "model_configs" / "eov_tiny_rn.json"),
        "MODEL.OV_HEAD.CLIP_PRETRAINED_WEIGHTS", "",
        "MODEL.OV_HEAD.CLIP_VIT_MODEL_NAME", str(ROOT / "sed" / "model_configs" / "eov_tiny_vit.json"),
        "MODEL.OV_HEAD.CLIP_VIT_PRETRAINED_WEIGHTS", "",
        "MODEL.OV_HEAD.EMBED_DIM", "32", "MODEL.EOV_SEG.HIDDEN_DIM", "32", "MODEL.EOV_SEG.AGG_DIM", "16",
        "MODEL.EOV_SEG.NUM_PROPOSALS", "12", "MODEL.EOV_SEG.TRAIN_NUM_POINTS", "64",
        "MODEL.EOV_SEG.TRAIN_CLASS_JSON", str(train_json), "MODEL.EOV_SEG.TEST_CLASS_JSON", str(test_json),
        "MODEL.EOV_SEG.NUM_CLASSES", str(len(json.loads(Path(train_json).read_text()))), *opts,
    )
    return build_model(cfg).eval()


def image_input(image):
    """The model input of one (3, H, W) uint8 image, at its own size."""
    return {"image": image.float(), "height": image.shape[1], "width": image.shape[2]}


# --- the released-format SED fixture (../shared/fixtures/sed_official_tiny) -----------------------


def require_sed_fixture():
    """Skips the test, saying why, where ../shared has no released-format SED fixture."""
    if not (SED_FIXTURE / "model_final.pth").is_file():
        pytest.skip(f"../shared is absent ({SED_FIXTURE} not found): released-format fixture unavailable")


def sed_fixture_opts(pooling):
    """The SED fixture's config keys (KEY VALUE list): its tiny CLIP, vocabularies and weights, the
    decoder's pooling sizes ``pooling`` (a string such as "[1,1]"). Skips without the fixture."""
    require_sed_fixture()
    return ["MODEL.ENC.CLIP_MODEL_NAME", str(SED_FIXTURE / "sedtest_tiny.json"),
            "MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "laion_aesthetic_s13b_b82k",  # never used: WEIGHTS set
            "MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", str(SED_FIXTURE / "train_classes.json"),
            "MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", str(SED_FIXTURE / "test_classes.json"),
            "MODEL.SEM_SEG_HEAD.POOLING_SIZES", pooling,
            "MODEL.WEIGHTS", str(SED_FIXTURE / "model_final.pth")]


def sed_fixture_cfg(pooling, *opts):
    """The SED fixture's config (:func:`sed_fixture_opts`), then ``opts``. Skips without the fixture."""
    return make_cfg(*sed_fixture_opts(pooling), *opts)


def build_sed_fixture(pooling, *opts):
    """The SED fixture's model (:func:`sed_fixture_cfg`) with its weights loaded, in training
    mode as built."""
    cfg = sed_fixture_cfg(pooling, *opts)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model


def run_sed(model, image):
    """SED's (T, H, W) scores, over its T test classes, for one (3, H, W) uint8 image."""
    return model([image_input(image)])[0]["sem_seg"]


# --- the released-format EOV-Seg fixture (../shared/fixtures/eov_seg_tiny) ------------------------


def require_eov_fixture():
    """Skips the test, saying why, where ../shared has no released-format EOV-Seg fixture."""
    if not (EOV_FIXTURE / "model_final.pth").is_file():
        pytest.skip(f"../shared is absent ({EOV_FIXTURE} not found): EOV-Seg fixture unavailable")


def eov_fixture_cfg(mode="panoptic", *opts):
    """The checker's recipe: the config file, the fixture's settings (files relative to the
    fixture), then the weights, the device and the output switches of ``mode`` (a key of
    EOV_FIXTURE_MODES), then ``opts``. Skips without the fixture."""
    require_eov_fixture()
    cfg = get_cfg()
    add_project_config(cfg)
    cfg.merge_from_file(str(EOV_FIXTURE_CONFIG))
    settings = json.loads((EOV_FIXTURE / "settings.json").read_text())["opts"]
    for i in range(1, len(settings), 2):
        if settings[i].endswith(".json"):
            settings[i] = str(EOV_FIXTURE / settings[i])
    cfg.merge_from_list(settings)
    switches = [[f"MODEL.EOV_SEG.TEST.{k}", str(v)] for k, v in EOV_FIXTURE_MODES[mode].items()]
    cfg.merge_from_list(["MODEL.WEIGHTS", str(EOV_FIXTURE / "model_final.pth"), "MODEL.DEVICE", "cpu",
                         "MODEL.EOV_SEG.TEXT_CACHE_DIR", "", *sum(switches, []), *opts])
    return cfg


def build_eov_fixture(mode="panoptic", *opts):
    """The EOV-Seg fixture's model (:func:`eov_fixture_cfg`) with its weights loaded, in eval mode."""
    cfg = eov_fixture_cfg(mode, *opts)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model.eval()


def assert_panoptic_equal(out, expected):
    """An EOV-Seg output's panoptic (H, W) id map and segments, and its instances, against the
    fixture's: the segments and classes exactly, scores to 1e-4, at most 0.1% of the pixels differing."""
    ids, info = out["panoptic_seg"]
    expected_ids, expected_info = expected["panoptic_seg"]
    assert info == expected_info
    assert ids.dtype == torch.int32 and ids.shape == expected_ids.shape
    assert (ids != expected_ids).float().mean() <= 0.001
    inst, ref = out["instances"], expected["instances"]
    assert len(inst) == len(ref["scores"])
    assert torch.equal(inst.pred_classes, ref["pred_classes"])
    assert torch.allclose(inst.scores, ref["scores"], atol=1e-4)
    assert (inst.pred_masks.bool() != ref["pred_masks"]).float().mean() <= 0.001


def eov_training_inputs(train):
    """EOV-Seg's training inputs from the fixture's training case: per (3, H, W) image, its
    instances' classes (N,) and (N, H, W) masks."""
    inputs = []
    for image, classes, masks in zip(train["images"], train["gt_classes"], train["gt_masks"]):
        instances = Instances(tuple(image.shape[-2:]), gt_classes=classes, gt_masks=masks)
        inputs.append({"image": image.float(), "instances": instances,
                       "height": image.shape[1], "width": image.shape[2]})
    return inputs


# --- commands -------------------------------------------------------------------------------------


def sh(*args, env=None):
    """``sh ARGS...`` in the repository (run.sh, eval.sh), output captured as text."""
    return subprocess.run(["sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def train_net(*opts, env, config="configs/synthetic_tiny.yaml", timeout=600):
    """``train_net.py --config-file CONFIG OPTS...`` in the repository, output captured as text.
    ``opts``: the flags (``--eval-only``) first, then the config's overrides."""
    cmd = [sys.executable, "train_net.py", "--config-file", config, *opts]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def pretrain_tiny_clip(out, *args, env):
    """tools/pretrain_tiny_clip.py on configs/synthetic_tiny.yaml, as quickstart.sh runs it."""
    return subprocess.run([sys.executable, "tools/pretrain_tiny_clip.py", "--config-file", "configs/synthetic_tiny.yaml",
                           "--output", str(out), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def prepare(script, root, *extra):
    """``datasets/SCRIPT --root ROOT --workers 2 EXTRA...``, output captured as text."""
    return subprocess.run([sys.executable, f"datasets/{script}", "--root", str(root), "--workers", "2", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def kill_when(args, env, ready, timeout=300) -> None:
    """Start the command ``args`` in its own process group, poll ``ready()`` and kill the group
    (the command and every process it started) with SIGKILL as soon as it holds; fails if the
    command ended first."""
    with tempfile.TemporaryFile() as output:
        run = subprocess.Popen(args, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while not ready() and time.time() < deadline:
            if run.poll() is not None:
                output.seek(0)
                raise AssertionError(f"{' '.join(map(str, args))} ended (status {run.returncode}) before it was "
                                     f"killed:\n{output.read()[-3000:].decode(errors='replace')}")
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert ready(), f"{' '.join(map(str, args))} was killed after {timeout} s without getting there"


def kill_after_first_checkpoint(args, out, env) -> int:
    """Start the training command ``args`` (writing to ``out``), kill it with SIGKILL as soon as
    it has written a checkpoint, and return the iteration a resumed run starts from."""
    kill_when(args, env, lambda: (out / "last_checkpoint").exists())
    assert not (out / "model_final.pth").exists()
    done = (out / "last_checkpoint").read_text()
    return int(done[len("model_"):-len(".pth")]) + 1


# --- image files ----------------------------------------------------------------------------------


def save_image(array, path, mode=None):
    """Writes the (H, W) or (H, W, 3) array as an image at ``path`` (its folders made), converted
    to the PIL ``mode`` if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode is None else Image.fromarray(array).convert(mode).save(path)


def load_image(path):
    """The image at ``path`` as an array: (H, W) or (H, W, 3)."""
    return np.array(Image.open(path))


# --- panoptic quality -----------------------------------------------------------------------------


def pq_summary(pq, sq, rq, suffix=""):
    """PQ, SQ and RQ keyed like the evaluator's results (``suffix``: "", "_th" or "_st")."""
    return {"PQ" + suffix: pq, "SQ" + suffix: sq, "RQ" + suffix: rq}


def straightforward_pq(gt_maps, gt_segments, pred_maps, pred_segments, categories):
    """PQ by the COCO rules from the pixel masks, in fractions, keyed like the evaluator.
    Maps: (H, W) segment ids per image, 0 = VOID in the GT. Segments: GT (id, dataset category,
    iscrowd), predicted (id, dataset category). ``categories``: the COCO panoptic categories
    (id, name, isthing)."""
    counts = defaultdict(lambda: np.zeros(4))  # IoU sum, TP, FP, FN per category
    for gt, gt_segs, pred, pred_segs in zip(gt_maps, gt_segments, pred_maps, pred_segments):
        void = gt == 0
        matched = set()
        for g, category, crowd in gt_segs:
            hit = None
            for p, pred_category in pred_segs:
                union = ((gt == g) | (pred == p)).sum() - ((pred == p) & void).sum()
                iou = ((gt == g) & (pred == p)).sum() / union
                if not crowd and pred_category == category and iou > 0.5:
                    hit = p
                    counts[category] += [iou, 1, 0, 0]
                    matched.add(p)
            if hit is None and not crowd:
                counts[category][3] += 1
        for p, category in pred_segs:
            crowd = np.isin(gt, [g for g, c, k in gt_segs if k and c == category])
            if p not in matched and ((pred == p) & (void | crowd)).sum() / (pred == p).sum() <= 0.5:
                counts[category][2] += 1
    result = {}
    for suffix, group in (("", (1, 0)), ("_th", (1,)), ("_st", (0,))):
        values = []
        for c in categories:
            iou, tp, fp, fn = counts[c["id"]]
            if c["isthing"] in group and tp + fp + fn:
                weight = tp + fp / 2 + fn / 2
                values.append((iou / weight, iou / tp if tp else 0, tp / weight))
                result.update({f"{k}-{c['name']}": v for k, v in zip(("PQ", "SQ", "RQ"), values[-1])})
        result.update(pq_summary(*np.mean(values, axis=0), suffix))
    return result


def quick_start_promise(model: str) -> dict:
    """The promise of ``bash tools/quickstart.sh MODEL``: the floor of the lowest mIoU, class IoU
    and (EOV-Seg) PQ of its runs over floating-point orders
    (benchmarks/quick_start/cpu_MODEL_quick_start_runs.json, docs/quick-start-runs.md), as the
    README and GETTING_STARTED.md print it, and the number of runs."""
    path = ROOT / "benchmarks" / "quick_start" / f"cpu_{model}_quick_start_runs.json"
    runs = json.loads(path.read_text())["runs"]
    promise = {key: math.floor(min(r["metrics"][key] for r in runs)) for key in ("PQ", "mIoU") if key in runs[0]["metrics"]}
    promise["class"] = math.floor(min(v for r in runs for k, v in r["metrics"].items() if k.startswith("IoU-")))
    promise["runs"] = len(runs)
    return promise
