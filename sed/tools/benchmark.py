"""Measure the speed and memory of a model of any family (SED, EOV-Seg; the config's
MODEL.META_ARCHITECTURE picks it). Also ``python -m sed.tools.benchmark`` or ``sed-benchmark``.

    python tools/benchmark.py --config-file configs/convnextB_768.yaml --vocabulary ade150 \\
        --image-size 768 --batch-size 1 --device cpu --dtype float32 [--fast --topk 8] \\
        [--output results.json] [--opts KEY VALUE ...]
    python tools/benchmark.py --config-file configs/eov_seg/eov_seg_R50.yaml --vocabulary ade150 \\
        --image-size 640 853 --device cpu
    python tools/benchmark.py --config-file configs/convnextB_768.yaml --vocabulary coco --train --device cuda
    python tools/benchmark.py --config-file configs/eov_seg/eov_seg_R50.yaml --train --dtype float16
    python tools/benchmark.py --config-file configs/convnextB_768.yaml --vocabulary pc459 \\
        --random-text-embeddings --fast --ranked-rejection --topk 8 32 128 459 --plot curve.png
    python tools/benchmark.py --config-file configs/eov_seg/eov_seg_R50.yaml --random-text-embeddings \\
        --onnx eov_seg.onnx
    python tools/benchmark.py --config-file configs/convnextB_768.yaml --random-text-embeddings --compile

Inference: warm-up, then timed iterations (the device synchronised) on random images of
--image-size (one value: square; two: height and width; default: the family's, e.g. SED's
768x768 CLIP input, EOV-Seg's published test resize of a 4:3 image, 640x853, with panoptic
output), with random weights or MODEL.WEIGHTS (--opts); reports ms/image (median, p10, p90),
images/s, parameters held and those the inference runs (the text tower's are not, once the
vocabulary's embeddings are cached), GFLOPs per image (fvcore: one multiply-add counts as one;
network and semantic output), peak memory (CUDA allocator on GPU, process RSS on CPU), device,
software versions, the classes kept by category early rejection (families that have it: SED)
and the time taken to get the vocabulary's text embeddings (encoded, or read from the disk
cache). --dtype bfloat16 also reports the agreement with float32. --train reports training
iterations/s and memory at the recipe's crop and --batch-size (random labels of the family's
kind, e.g. SED: label maps over the vocabulary, EOV-Seg: panoptic masks over the config's
training classes; the training loop's own step, --dtype its autocast type, float16 with the
gradient scaler; the peak over all steps, which includes the optimizer state, and that of the
first step); --text-only just the text embeddings (prompts and prompts/s). Prints the figures
and writes them as JSON (--output).

--onnx FILE (a tools/export.py export of the same config and weights; random weights: both
tools use seed 0) also runs the file with onnxruntime (CPU, or CUDA where onnxruntime has it)
on the same images and vocabulary, interleaved with PyTorch (one PyTorch pass, then one
onnxruntime pass, per iteration), from the uint8 image to the outputs the PyTorch model
gives (sed.deploy: pre-processing, the graph, the family's post-processing in NumPy, the same
outputs switched on): its figures are under "onnxruntime", with how far its outputs are from
PyTorch's (peak memory is that of the process, both runtimes together).

--compile compiles the model as TEST.COMPILE does (sed.compile; TEST.COMPILE_MODE and
TEST.COMPILE_CACHE_DIR through --opts) and times it against the same model run eagerly on the
same images, interleaved (one eager pass, then one compiled pass, per iteration): the eager
figures as usual, the compiled ones under "compiled", with the first compiled call apart
("compile": its seconds, each graph built or loaded from inductor's cache, cache hits and
misses), the graphs built by the end of the timing (no more than the first call built: no
recompilation) and the agreement with eager (as --dtype bfloat16 measures it against float32).

Several --topk values (families with early rejection) measure the early-rejection curve: plain
inference, then each TOPK, as a list under "curve" (and a picture with --plot). Random weights
rank classes at random and keep nearly all of them; --ranked-rejection makes the rejection
heads rank the classes in one fixed order, so exactly TOPK classes go through the decoder, as
when trained heads agree.

Options that do not go together, a vocabulary that does not parse, an --onnx file that does not
exist, or an --output / --plot path that is a folder or cannot be written (their folders are
created) stop before the model is built, with one line "benchmark.py: error: ..." and exit
status 2; an error while running (a config or checkpoint that does not fit) with one line and
status 1 (--debug adds the traceback).
"""
import argparse
import itertools
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from fvcore.nn import FlopCountAnalysis
from torch.utils._python_dispatch import TorchDispatchMode

from sed.checkpoint import Checkpointer
from sed.compile import cache_dir, compile_log, compile_model, eager
from sed.config import INFERENCE_DTYPES
from sed.cpu_memory import configure_cpu_memory
from sed.family import ModelFamily, get_family
from sed.predictor import load_config, parse_vocabulary_spec
from sed.tools import cli
from sed.solver import build_optimizer
from sed.train_loop import AccumulatingTrainer
from sed.vocabulary import Vocabulary


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--vocabulary", default="ade150",
                        help="benchmark name, vocabulary file, or a number of classes (generated names)")
    parser.add_argument("--image-size", type=cli.positive_int, nargs="+", default=None,
                        help="random input images: side (square) or height and width; default by model")
    parser.add_argument("--batch-size", type=cli.positive_int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(INFERENCE_DTYPES), default="float32",
                        help="autocast type (float32: none); inference also reports its argmax agreement with float32")
    parser.add_argument("--fast", action="store_true", help="category early rejection (TEST.FAST_INFERENCE)")
    parser.add_argument("--topk", type=cli.positive_int, nargs="+", default=[8],
                        help="classes each pixel keeps; several values: the early-rejection curve")
    parser.add_argument("--ranked-rejection", action="store_true",
                        help="rejection heads rank classes in a fixed order: exactly TOPK classes are kept")
    parser.add_argument("--plot", default="",
                        help="PNG of the early-rejection curve (several --topk; its folder is created if missing)")
    parser.add_argument("--warmup", type=cli.non_negative_int, default=2, help="untimed iterations first")
    parser.add_argument("--iters", type=cli.positive_int, default=10, help="timed iterations")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--random-text-embeddings", action="store_true",
                        help="skip encoding the vocabulary (random class embeddings): image-side figures only")
    parser.add_argument("--train", action="store_true", help="measure training iterations instead")
    parser.add_argument("--text-only", action="store_true",
                        help="only the vocabulary's text embeddings (cold: give an empty TEXT_CACHE_DIR)")
    parser.add_argument("--onnx", default="", help="exported model (tools/export.py) timed against PyTorch")
    parser.add_argument("--compile", action="store_true",
                        help="compiled inference (TEST.COMPILE) timed against eager, with its compile time")
    parser.add_argument("--output", default="", help="JSON file for the results (its folder is created if missing)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Options that do not go together, a missing --onnx file, and output files that cannot be
    written (their folders are created) stop with a :class:`sed.tools.cli.UsageError`."""
    if len(args.topk) > 1 and not args.fast:
        raise cli.UsageError("several --topk values measure the early-rejection curve: add --fast")
    if args.plot and len(args.topk) == 1:
        raise cli.UsageError("--plot draws the early-rejection curve: give several --topk values")
    if args.image_size and len(args.image_size) > 2:
        raise cli.UsageError("--image-size takes a side or a height and a width")
    if args.onnx and (args.train or args.text_only or len(args.topk) > 1 or args.batch_size != 1
                      or args.dtype != "float32"):
        raise cli.UsageError("--onnx times float32 inference of one image at a time (no --train, --text-only, "
                             "curve, --batch-size or --dtype)")
    if args.compile and (args.train or args.text_only or len(args.topk) > 1 or args.onnx):
        raise cli.UsageError("--compile times inference against eager (no --train, --text-only, curve or --onnx)")
    if args.onnx and not os.path.isfile(args.onnx):
        raise cli.UsageError(f"--onnx {args.onnx}: no such file (export one with tools/export.py)")
    for option, path in (("--output", args.output), ("--plot", args.plot)):
        if path:
            cli.output_file(path, option)


def check_family(args: argparse.Namespace, cfg) -> ModelFamily:
    """The model family of the config; flags the model has no use for stop with an error."""
    family = get_family(cfg)
    if not family.benchmark.early_rejection and (args.fast or args.ranked_rejection or len(args.topk) > 1):
        raise cli.UsageError(f"--fast, --topk and --ranked-rejection measure category early rejection, "
                             f"which {family.title} does not have")
    return family


def vocabulary(spec: str, family: ModelFamily) -> Vocabulary:
    """A benchmark name of ``family``, a file or class names; a number: that many generated
    names, even ones things."""
    if spec.isdigit():
        return Vocabulary(tuple(f"class {i}" for i in range(int(spec))), tuple(i % 2 == 0 for i in range(int(spec))))
    return parse_vocabulary_spec(spec, family)


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's processor or architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed(step, device, warmup, iters):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def time_inference(model, images, device, warmup, iters, count_kept: bool) -> dict:
    """Timing of inference on ``images`` (uint8 (3, H, W) tensors, one batch); with
    ``count_kept``, the mean number of classes early rejection kept (non-zero scores)."""
    inputs = [{"image": im} for im in images]
    kept = []

    @torch.no_grad()
    def step():
        out = model(inputs)
        if count_kept:
            kept.append(float(np.mean([int((o["sem_seg"].flatten(1).amax(1) > 0).sum()) for o in out])))

    figures = per_image_figures(timed(step, device, warmup, iters), len(images))
    return {**figures, "classes_kept": statistics.mean(kept)} if count_kept else figures


def per_image_figures(times, batch_size: int) -> dict:
    """Seconds per iteration -> ms per image (median, p10, p90) and images/s."""
    per_image = sorted(t / batch_size * 1000 for t in times)
    median = statistics.median(per_image)
    return {
        "ms_per_image": {"median": median, "p10": float(np.percentile(per_image, 10)),
                         "p90": float(np.percentile(per_image, 90))},
        "images_per_s": 1000 / median,
    }


def panoptic_categories(panoptic_seg) -> torch.Tensor:
    """(H, W) class of each pixel's panoptic segment (-1: none) from ``(ids, segments)``."""
    ids, segments = panoptic_seg
    categories = torch.full(ids.shape, -1, dtype=torch.long, device=ids.device)
    for segment in segments:
        categories[ids == segment["id"]] = segment["category_id"]
    return categories


def agreement(outputs, reference, name: str) -> dict:
    """How far ``outputs`` are from the ``reference`` outputs (called ``name``) of the same
    images: the fraction of pixels keeping their predicted class (argmax), the largest score
    change, and the median reference margin between the two best classes (labels flip where the
    margin is below the change); with panoptic output, the fraction of pixels whose segment keeps
    its class, and the fraction whose segment id is the same."""
    figures = {}
    if "sem_seg" in reference[0]:  # (T, H, W) per image, the images of any sizes
        pairs = [(o["sem_seg"].float(), r["sem_seg"].float()) for o, r in zip(outputs, reference)]
        same = torch.cat([(o.argmax(0) == r.argmax(0)).flatten() for o, r in pairs])
        figures[f"argmax_agreement_vs_{name}"] = float(same.float().mean())
        figures[f"max_probability_change_vs_{name}"] = max(float((o - r).abs().max()) for o, r in pairs)
        if pairs[0][1].shape[0] > 1:
            margins = torch.cat([(top2[0] - top2[1]).flatten() for top2 in (r.topk(2, dim=0).values for _, r in pairs)])
            figures[f"{name}_top2_margin_median"] = float(margins.median())
    if "panoptic_seg" in reference[0]:
        pairs = [(o["panoptic_seg"], r["panoptic_seg"]) for o, r in zip(outputs, reference)]
        same = [(panoptic_categories(o) == panoptic_categories(r)).float().mean() for o, r in pairs]
        figures[f"panoptic_class_agreement_vs_{name}"] = float(torch.stack(same).mean())
        figures[f"panoptic_ids_equal_share_vs_{name}"] = float(torch.stack([(o[0] == r[0]).float().mean()
                                                                             for o, r in pairs]).mean())
    return figures


@torch.no_grad()
def agreement_with_float32(model, images) -> dict:
    """:func:`agreement` of the model's reduced-precision outputs with its float32 ones."""
    inputs = [{"image": im} for im in images]
    reduced_out = model(inputs)
    dtype, model.inference_dtype = model.inference_dtype, None
    full_out = model(inputs)
    model.inference_dtype = dtype
    return agreement(reduced_out, full_out, "float32")


def time_against_eager(model, images, device, warmup: int, iters: int) -> dict:
    """A compiled model (``sed.compile``) against itself run eagerly on ``images``, interleaved
    (one eager pass, then one compiled pass, per iteration), after a first compiled call that
    builds the graphs: the eager figures, and under "compiled" the compiled ones, that first
    call's time and graphs (compile seconds, cache hits), the graphs built by the end (none
    more: no recompilation) and the :func:`agreement` with eager at the same precision."""
    inputs, outs = [{"image": im} for im in images], {}
    with torch.no_grad():
        first_call = timed(lambda: outs.__setitem__("compiled", model(inputs)), device, 0, 1)[0]
        graphs = compile_log()
        times = {"eager": [], "compiled": []}

        def run_eager():
            with eager(model):
                outs["eager"] = model(inputs)

        steps = {"eager": run_eager, "compiled": lambda: outs.__setitem__("compiled", model(inputs))}
        for i in range(warmup + iters):
            for name, step in steps.items():
                elapsed = timed(step, device, 0, 1)
                if i >= warmup:
                    times[name] += elapsed
    figures = {**per_image_figures(times["compiled"], len(images)),
               "compile": {"first_call_s": first_call, "compile_s": sum(g["seconds"] for g in graphs),
                           "graphs": graphs, "cache_hits": sum(g["cache_hits"] for g in graphs),
                           "cache_misses": sum(g["cache_misses"] for g in graphs), "cache_dir": cache_dir()},
               "graphs_after_timing": len(compile_log()),
               **agreement(outs["compiled"], outs["eager"], "eager")}
    return {**per_image_figures(times["eager"], len(images)), "interleaved_with_compiled": True, "compiled": figures}


class TensorRecorder(TorchDispatchMode):
    """Records the storages of every tensor the operators it sees read."""

    def __init__(self):
        super().__init__()
        self.storages = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._record((args, kwargs))
        return func(*args, **(kwargs or {}))

    def _record(self, value):
        if isinstance(value, torch.Tensor):
            self.storages.add(value.untyped_storage().data_ptr())
        elif isinstance(value, (list, tuple)):
            for v in value:
                self._record(v)
        elif isinstance(value, dict):
            for v in value.values():
                self._record(v)


@torch.no_grad()
def parameters_run(model, images) -> int:
    """Parameters one inference pass on ``images`` reads (text embeddings already cached).
    Copies that inference derives from weights and keeps (``clear_inference_cache``: the
    ResNet CLIP's folded BatchNorms) are remade inside the pass, which thereby reads their
    weights."""
    inputs = [{"image": im} for im in images]
    for module in model.modules():
        if hasattr(module, "clear_inference_cache"):
            module.clear_inference_cache()
    with TensorRecorder() as recorder:
        model(inputs)
    return sum(p.numel() for p in model.parameters() if p.untyped_storage().data_ptr() in recorder.storages)


def rank_classes_in_order(module, inputs, scores):
    """Forward hook for a rejection head: (T', 1, h, w) scores -> -t for the t-th class."""
    rank = torch.arange(scores.shape[0], device=scores.device, dtype=scores.dtype)
    return (-rank).view(-1, 1, 1, 1).expand_as(scores)


def plot_curve(curve, path: str, title: str):
    """PNG of ms/image against the classes kept, with plain inference as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = [p for p in curve if p["topk"] is None][0]
    fast = [p for p in curve if p["topk"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["classes_kept"] for p in fast], [p["ms_per_image"]["median"] for p in fast], "o-",
            label="early rejection")
    ax.axhline(plain["ms_per_image"]["median"], color="gray", linestyle="--",
               label=f"plain, all {plain['classes_kept']:.0f} classes")
    ax.set_xscale("log", base=2)
    ax.set_xticks([p["classes_kept"] for p in fast], [f"{p['classes_kept']:.0f}" for p in fast])
    ax.set_xlabel("classes kept through the decoder")
    ax.set_ylabel("ms per image (median)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def time_against_onnxruntime(model, image: torch.Tensor, vocabulary: Vocabulary, path: str, device: torch.device, *,
                             family: ModelFamily, warmup: int, iters: int) -> dict:
    """PyTorch and the exported ``path`` (``sed.deploy.ExportedModel``) on ``image`` (uint8
    (3, H, W)), interleaved: PyTorch's figures, and the file's under "onnxruntime". ``family``
    (the model's) says whether the file was exported for this model."""
    from sed.deploy import ExportedModel

    exported = ExportedModel(path, threads=torch.get_num_threads())
    meta = exported.metadata
    if meta["family"] != family.name:
        raise cli.UsageError(f"--onnx {path} is a {meta['family']} export, the config a {family.name}")
    mismatch = family.benchmark.export_mismatch(meta, model)
    if mismatch:
        raise cli.UsageError(f"--onnx {path} does not match the model: {mismatch}")
    names = list(vocabulary.names)
    embeddings = model.text_embeddings(names).cpu().numpy()
    hwc = image.permute(1, 2, 0).numpy()
    switches = {k: getattr(model, k) for k in ("semantic_on", "panoptic_on", "instance_on") if hasattr(model, k)}
    inputs, outs, times = [{"image": image}], {}, {"pytorch": [], "onnxruntime": []}
    steps = {"pytorch": lambda: outs.__setitem__("pytorch", model(inputs)[0]),
             "onnxruntime": lambda: outs.__setitem__("onnxruntime", exported(hwc, vocabulary, embeddings, resize=False,
                                                                              **switches))}
    with torch.no_grad():
        for i in range(warmup + iters):
            for name, step in steps.items():
                elapsed = timed(step, device, 0, 1)
                if i >= warmup:
                    times[name] += elapsed
    import onnxruntime

    ours, theirs = outs["pytorch"], outs["onnxruntime"]
    figures = {"file": path, "version": onnxruntime.__version__, "providers": exported.session.get_providers(),
               **per_image_figures(times["onnxruntime"], 1)}
    if "sem_seg" in ours:
        difference = torch.from_numpy(theirs["sem_seg"]) - ours["sem_seg"].cpu()
        figures["max_abs_difference_sem_seg"] = float(difference.abs().max())
    if "panoptic_seg" in ours:
        figures["panoptic_ids_equal_share"] = float(
            (torch.from_numpy(theirs["panoptic_seg"][0]) == ours["panoptic_seg"][0].cpu()).float().mean())
    return {**per_image_figures(times["pytorch"], 1), "interleaved_with_onnxruntime": True, "onnxruntime": figures}


class ImageToSemSeg(torch.nn.Module):
    """(B, 3, H, W) images -> (B, T, H, W) semantic scores, for fvcore's tracer (a model with
    output switches, e.g. EOV-Seg: the semantic output on, the others off: their
    post-processing is data-dependent Python)."""
    SWITCHES = {"semantic_on": True, "panoptic_on": False, "instance_on": False}

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        switches = {k: getattr(self.model, k) for k in self.SWITCHES if hasattr(self.model, k)}
        for k in switches:
            setattr(self.model, k, self.SWITCHES[k])
        try:
            return torch.stack([o["sem_seg"] for o in self.model([{"image": im} for im in images])])
        finally:
            for k, v in switches.items():
                setattr(self.model, k, v)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run_cli(build_parser(), benchmark, argv)


def benchmark(args: argparse.Namespace) -> int:
    """Check the arguments, build the model, measure it and report the figures."""
    check_args(args)
    if args.compile:  # compiling's progress and cache use
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    family = check_family(args, load_config(args.config_file, opts=args.opts))
    with cli.usage_errors():
        classes = vocabulary(args.vocabulary, family)
    spec = family.benchmark
    rejection = spec.early_rejection.opts(args.fast, args.topk[0]) if spec.early_rejection else ()
    cfg = load_config(args.config_file,
                      opts=["MODEL.DEVICE", args.device, *spec.random_init_opts, *rejection, *args.opts])
    device = torch.device(cfg.MODEL.DEVICE)
    configure_cpu_memory(cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    names = list(classes.names)
    amp = INFERENCE_DTYPES[args.dtype]
    if args.train:
        size = (spec.train_crop(cfg),) * 2
    else:
        size = (args.image_size[0], args.image_size[-1]) if args.image_size else spec.image_size  # one value: square
    images = [torch.randint(0, 256, (3, *size), dtype=torch.uint8) for _ in range(args.batch_size)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if args.train:
        batch, train_classes = spec.train_batch(model, names, images)
        # The training loop's own step (float16: with its gradient scaler), on the same batch.
        trainer = AccumulatingTrainer(model, itertools.repeat(batch), build_optimizer(cfg, model),
                                      amp_dtype=amp, device_type=device.type)
        first_step_peak = []

        def step():
            trainer.run_step()
            if not first_step_peak:
                first_step_peak.append(peak_memory_mb(device))
    else:
        model.eval()
        family.set_vocabulary(model, classes)
        model.inference_dtype = amp
        if args.ranked_rejection:
            for head in spec.early_rejection.heads(model):
                head.register_forward_hook(rank_classes_in_order)

    if args.random_text_embeddings:
        shape = model.text_embeddings(["probe"]).shape[1:]  # SED: (P, C); EOV-Seg: (C,)
        text = F.normalize(torch.randn(model.class_embeddings.num_entries(names), *shape), dim=-1)
        model.class_embeddings.put(names, text.to(device))
    start = time.perf_counter()
    model.text_embeddings(names)  # computed (or read from the disk cache) before timing
    text_seconds = time.perf_counter() - start
    results = {
        "mode": "train" if args.train else "text" if args.text_only else "inference",
        "model": family.name, "config": args.config_file, "opts": args.opts,
        "classes": train_classes if args.train else len(names),
        "image_size": list(size), "batch_size": args.batch_size, "dtype": args.dtype, "fast_inference": args.fast,
        "topk": (args.topk[0] if len(args.topk) == 1 else args.topk) if args.fast else None,
        "ranked_rejection": args.ranked_rejection, "random_text_embeddings": args.random_text_embeddings,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "text_embedding_s": text_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "platform": platform.platform()},
    }
    if args.text_only:
        cache = model.class_embeddings
        results["prompts"] = len(cache.templates) * sum(cache.num_names(names))
        results["prompts_per_s"] = results["prompts"] / text_seconds
    elif args.train:
        with EventStorage():
            times = timed(step, device, args.warmup, args.iters)
        results.update(per_image_figures(times, args.batch_size), iterations_per_s=1 / statistics.median(times),
                       peak_memory_mb_first_step=first_step_peak[0], amp_grad_scaler=trainer.grad_scaler is not None)
        results.update(spec.train_settings(cfg))
    elif len(args.topk) > 1:
        curve = []
        for topk in [None, *args.topk]:
            spec.early_rejection.set(model, topk)
            curve.append({"topk": topk, **time_inference(model, images, device, args.warmup, args.iters, True)})
        results["curve"] = curve
        if args.plot:
            where = results["device_name"] if device.type == "cuda" else f"CPU, {results['cpu_threads']} threads"
            plot_curve(curve, args.plot,
                       f"{family.title}, {len(names)} classes, {size[0]}x{size[1]}px, {where}, {args.dtype}")
    elif args.compile:
        compile_model(model, cfg)
        results.update(time_against_eager(model, images, device, args.warmup, args.iters))
    elif args.onnx:
        results.update(time_against_onnxruntime(model, images[0], classes, args.onnx, device, family=family,
                                                 warmup=args.warmup, iters=args.iters))
    else:
        results.update(time_inference(model, images, device, args.warmup, args.iters, bool(spec.early_rejection)))
        if amp is not None:
            results.update(agreement_with_float32(model, images))
    results["peak_memory_mb"] = peak_memory_mb(device)
    if not (args.train or args.text_only or "curve" in results):
        with eager(model):  # the operators' inputs, as the modules' own forwards read them
            results["parameters_run"] = parameters_run(model, images[:1])
        if not args.no_flops:
            with torch.no_grad(), eager(model):
                flops = FlopCountAnalysis(ImageToSemSeg(model), (torch.stack(images[:1]),))
                flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
                results["gflops_per_image"] = flops.total() / 1e9
    print(json.dumps(results, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
