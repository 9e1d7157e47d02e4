"""Measure SED's speed and memory.

    python tools/benchmark.py --config-file configs/convnextB_768.yaml --vocabulary ade150 \\
        --image-size 768 --batch-size 1 --device cpu --dtype float32 [--fast --topk 8] \\
        [--output results.json] [--opts KEY VALUE ...]
    python tools/benchmark.py --config-file configs/convnextB_768.yaml --train --device cuda

Inference: warm-up, then timed iterations (the device synchronised) on random images of
--image-size; reports ms/image (median, p10, p90), images/s, parameters, GFLOPs per image
(fvcore: one multiply-add counts as one), peak memory (CUDA allocator on GPU, process RSS on
CPU), device, software versions, the classes kept by early rejection and the time taken to get
the vocabulary's text embeddings (encoded, or read from the disk cache). --train reports
training iterations/s and memory at the recipe's crop and batch per device. Prints the
figures and writes them as JSON (--output).
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

from sed.predictor import load_config, resolve_vocabulary
from sed.solver import build_optimizer

DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--vocabulary", default="ade150",
                        help="benchmark name, vocabulary file, or a number of classes (generated names)")
    parser.add_argument("--image-size", type=int, default=768, help="side of the random square input images")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="autocast type (float32: none)")
    parser.add_argument("--fast", action="store_true", help="category early rejection (TEST.FAST_INFERENCE)")
    parser.add_argument("--topk", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--random-text-embeddings", action="store_true",
                        help="skip encoding the vocabulary (random class embeddings): image-side figures only")
    parser.add_argument("--train", action="store_true", help="measure training iterations instead")
    parser.add_argument("--output", default="", help="JSON file for the results")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    return parser.parse_args(argv)


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


class ImageToSemSeg(torch.nn.Module):
    """(B, 3, H, W) images -> (B, T, H, W) probabilities, for fvcore's tracer."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return torch.stack([o["sem_seg"] for o in self.model([{"image": im} for im in images])])


def main(argv=None) -> int:
    args = parse_args(argv)
    opts = ["MODEL.DEVICE", args.device, "TEST.FAST_INFERENCE", str(args.fast), "TEST.TOPK", str(args.topk),
            "MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "", *args.opts]
    cfg = load_config(args.config_file, opts=opts)
    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(0)
    model = build_model(cfg)
    names = vocabulary(args.vocabulary)
    amp = DTYPES[args.dtype]
    size = cfg.INPUT.CROP.SIZE[0] if args.train else args.image_size
    images = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(args.batch_size)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if args.train:
        model.train()
        model.train_class_names = names
        optimizer = build_optimizer(cfg, model)
        batch = [{"image": im, "sem_seg": torch.randint(0, len(names), (size, size))} for im in images]

        def step():
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    else:
        model.eval()
        model.test_class_names = names
        inputs = [{"image": im} for im in images]
        kept = []

        @torch.no_grad()
        def step():
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = model(inputs)
            kept.append(float(np.mean([int((o["sem_seg"].flatten(1).amax(1) > 0).sum()) for o in out])))

    if args.random_text_embeddings:
        shape = model.text_embeddings(["probe"]).shape[1:]  # (P, C)
        text = torch.nn.functional.normalize(torch.randn(len(names), *shape), dim=-1)
        model.class_embeddings.put(names, text.to(device))
    start = time.perf_counter()
    model.text_embeddings(names)  # computed (or read from the disk cache) before timing
    text_seconds = time.perf_counter() - start
    times = timed(step, device, args.warmup, args.iters)
    per_image = sorted(t / args.batch_size * 1000 for t in times)
    results = {
        "mode": "train" if args.train else "inference",
        "config": args.config_file, "opts": args.opts, "classes": len(names), "image_size": size,
        "batch_size": args.batch_size, "dtype": args.dtype, "fast_inference": args.fast,
        "topk": args.topk if args.fast else None, "random_text_embeddings": args.random_text_embeddings,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "ms_per_image": {"median": statistics.median(per_image), "p10": float(np.percentile(per_image, 10)),
                         "p90": float(np.percentile(per_image, 90))},
        "images_per_s": 1000 / statistics.median(per_image),
        "peak_memory_mb": peak_memory_mb(device),
        "text_embedding_s": text_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "platform": platform.platform()},
    }
    if args.train:
        results["iterations_per_s"] = 1 / statistics.median(times)
    else:
        results["classes_kept"] = statistics.mean(kept)
        if not args.no_flops:
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
