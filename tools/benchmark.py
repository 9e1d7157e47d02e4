"""Measure SED's speed and memory.

    python tools/benchmark.py --config-file configs/convnextB_768.yaml --vocabulary ade150 \\
        --image-size 768 --batch-size 1 --device cpu --dtype float32 [--fast --topk 8] \\
        [--output results.json] [--opts KEY VALUE ...]
    python tools/benchmark.py --config-file configs/convnextB_768.yaml --train --device cuda
    python tools/benchmark.py --config-file configs/convnextB_768.yaml --vocabulary pc459 \\
        --random-text-embeddings --fast --ranked-rejection --topk 8 32 128 459 --plot curve.png

Inference: warm-up, then timed iterations (the device synchronised) on random images of
--image-size; reports ms/image (median, p10, p90), images/s, parameters, GFLOPs per image
(fvcore: one multiply-add counts as one), peak memory (CUDA allocator on GPU, process RSS on
CPU), device, software versions, the classes kept by early rejection and the time taken to get
the vocabulary's text embeddings (encoded, or read from the disk cache). --train reports
training iterations/s and memory at the recipe's crop and batch per device (the peak over all
steps, which includes the optimizer state, and the peak of the first step); --text-only just
the text embeddings (prompts and prompts/s). Prints the figures and writes them as JSON
(--output).

Several --topk values measure the early-rejection curve: plain inference, then each TOPK, as
a list under "curve" (and a picture with --plot). Random weights rank classes at random and
keep nearly all of them; --ranked-rejection makes the rejection heads rank the classes in one
fixed order, so exactly TOPK classes go through the decoder, as when trained heads agree.
"""
import argparse
import json
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch
from detectron2.modeling import build_model
from fvcore.nn import FlopCountAnalysis

from sed.modeling.sed.meta_arch import INFERENCE_DTYPES
from sed.predictor import load_config, resolve_vocabulary
from sed.solver import build_optimizer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--vocabulary", default="ade150",
                        help="benchmark name, vocabulary file, or a number of classes (generated names)")
    parser.add_argument("--image-size", type=int, default=768, help="side of the random square input images")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(INFERENCE_DTYPES), default="float32",
                        help="autocast type (float32: none); inference also reports its argmax agreement with float32")
    parser.add_argument("--fast", action="store_true", help="category early rejection (TEST.FAST_INFERENCE)")
    parser.add_argument("--topk", type=int, nargs="+", default=[8],
                        help="classes each pixel keeps; several values: the early-rejection curve")
    parser.add_argument("--ranked-rejection", action="store_true",
                        help="rejection heads rank classes in a fixed order: exactly TOPK classes are kept")
    parser.add_argument("--plot", default="", help="PNG of the early-rejection curve (several --topk)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--random-text-embeddings", action="store_true",
                        help="skip encoding the vocabulary (random class embeddings): image-side figures only")
    parser.add_argument("--train", action="store_true", help="measure training iterations instead")
    parser.add_argument("--text-only", action="store_true",
                        help="only the vocabulary's text embeddings (cold: give an empty TEXT_CACHE_DIR)")
    parser.add_argument("--output", default="", help="JSON file for the results")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    if len(args.topk) > 1 and not args.fast:
        parser.error("several --topk values measure the early-rejection curve: add --fast")
    if args.plot and len(args.topk) == 1:
        parser.error("--plot draws the early-rejection curve: give several --topk values")
    return args


def vocabulary(spec: str):
    return [f"class {i}" for i in range(int(spec))] if spec.isdigit() else resolve_vocabulary(spec)


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


def time_inference(model, images, device, warmup, iters) -> dict:
    """Timing of inference on ``images`` (uint8 (3, H, W) tensors, one batch)."""
    inputs = [{"image": im} for im in images]
    kept = []

    @torch.no_grad()
    def step():
        out = model(inputs)
        kept.append(float(np.mean([int((o["sem_seg"].flatten(1).amax(1) > 0).sum()) for o in out])))

    return {**per_image_figures(timed(step, device, warmup, iters), len(images)), "classes_kept": statistics.mean(kept)}


def per_image_figures(times, batch_size: int) -> dict:
    """Seconds per iteration -> ms per image (median, p10, p90) and images/s."""
    per_image = sorted(t / batch_size * 1000 for t in times)
    median = statistics.median(per_image)
    return {
        "ms_per_image": {"median": median, "p10": float(np.percentile(per_image, 10)),
                         "p90": float(np.percentile(per_image, 90))},
        "images_per_s": 1000 / median,
    }


@torch.no_grad()
def agreement_with_float32(model, images) -> dict:
    """How far reduced-precision outputs are from float32: the fraction of pixels keeping their
    predicted class (argmax), the largest probability change, and the median float32 margin
    between the two best classes (labels flip where the margin is below the change)."""
    inputs = [{"image": im} for im in images]
    reduced = torch.stack([o["sem_seg"] for o in model(inputs)])
    dtype, model.inference_dtype = model.inference_dtype, None
    full = torch.stack([o["sem_seg"] for o in model(inputs)])
    model.inference_dtype = dtype
    figures = {
        "argmax_agreement_vs_float32": float((reduced.argmax(1) == full.argmax(1)).float().mean()),
        "max_probability_change_vs_float32": float((reduced - full).abs().max()),
    }
    if full.shape[1] > 1:
        top2 = full.topk(2, dim=1).values
        figures["float32_top2_margin_median"] = float((top2[:, 0] - top2[:, 1]).median())
    return figures


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


class ImageToSemSeg(torch.nn.Module):
    """(B, 3, H, W) images -> (B, T, H, W) probabilities, for fvcore's tracer."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return torch.stack([o["sem_seg"] for o in self.model([{"image": im} for im in images])])


def main(argv=None) -> int:
    args = parse_args(argv)
    opts = ["MODEL.DEVICE", args.device, "TEST.FAST_INFERENCE", str(args.fast), "TEST.TOPK", str(args.topk[0]),
            "MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "", *args.opts]
    cfg = load_config(args.config_file, opts=opts)
    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(0)
    model = build_model(cfg)
    names = vocabulary(args.vocabulary)
    amp = INFERENCE_DTYPES[args.dtype]
    size = cfg.INPUT.CROP.SIZE[0] if args.train else args.image_size
    images = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(args.batch_size)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if args.train:
        model.train()
        model.train_class_names = names
        optimizer = build_optimizer(cfg, model)
        batch = [{"image": im, "sem_seg": torch.randint(0, len(names), (size, size))} for im in images]
        first_step_peak = []

        def step():
            optimizer.zero_grad()  # before the forward pass, as in the training loop (AccumulatingTrainer)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = sum(model(batch).values())
            loss.backward()
            optimizer.step()
            if not first_step_peak:
                first_step_peak.append(peak_memory_mb(device))
    else:
        model.eval()
        model.test_class_names = names
        model.inference_dtype = amp
        if args.ranked_rejection:
            for head in model.decoder.rejection_heads:
                head.register_forward_hook(rank_classes_in_order)

    if args.random_text_embeddings:
        shape = model.text_embeddings(["probe"]).shape[1:]  # (P, C)
        text = torch.nn.functional.normalize(torch.randn(len(names), *shape), dim=-1)
        model.class_embeddings.put(names, text.to(device))
    start = time.perf_counter()
    model.text_embeddings(names)  # computed (or read from the disk cache) before timing
    text_seconds = time.perf_counter() - start
    results = {
        "mode": "train" if args.train else "text" if args.text_only else "inference",
        "config": args.config_file, "opts": args.opts, "classes": len(names), "image_size": size,
        "batch_size": args.batch_size, "dtype": args.dtype, "fast_inference": args.fast,
        "topk": (args.topk[0] if len(args.topk) == 1 else args.topk) if args.fast else None,
        "ranked_rejection": args.ranked_rejection, "random_text_embeddings": args.random_text_embeddings,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
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
        times = timed(step, device, args.warmup, args.iters)
        results.update(per_image_figures(times, args.batch_size), iterations_per_s=1 / statistics.median(times),
                       peak_memory_mb_first_step=first_step_peak[0],
                       train_checkpoint_chunks=cfg.MODEL.SEM_SEG_HEAD.TRAIN_CHECKPOINT_CHUNKS)
    elif len(args.topk) > 1:
        curve = []
        for topk in [None, *args.topk]:
            model.fast_inference, model.topk = topk is not None, topk
            curve.append({"topk": topk, **time_inference(model, images, device, args.warmup, args.iters)})
        results["curve"] = curve
        if args.plot:
            where = results["device_name"] if device.type == "cuda" else f"CPU, {results['cpu_threads']} threads"
            plot_curve(curve, args.plot, f"SED, {len(names)} classes, {args.image_size}px, {where}, {args.dtype}")
    else:
        results.update(time_inference(model, images, device, args.warmup, args.iters))
        if amp is not None:
            results.update(agreement_with_float32(model, images))
    results["peak_memory_mb"] = peak_memory_mb(device)
    if not (args.train or args.text_only or args.no_flops or "curve" in results):
        with torch.no_grad():
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
