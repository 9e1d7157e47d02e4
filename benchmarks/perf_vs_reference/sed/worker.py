"""One SED-B implementation in its own process: ours, or the authors' (xb534/SED).

Started by ``compare.py`` (which sets PYTHONPATH: the repository root, and for the authors'
code its bundled open_clip first, shadowing the pip one). Both implementations are packages
named ``sed`` that register a detectron2 meta-architecture named ``SED`` and need different
open_clip versions, so they cannot share a process.

Tasks:
  export-weights   (ref)  build the authors' model with random weights (fixed seed) and save
                          its state_dict as ``{"model": state_dict}``
  text-embeddings  (ours) load those weights through DetectionCheckpointer (reporting missing
                          / unexpected keys) and encode the vocabulary's prompt-ensembled
                          text embeddings once: (T, P, C) float32
  check-text       (ref)  encode a few classes with the authors' own code, compare
  serve            (both) load the weights and the text embeddings, then run forward passes
                          on command (one JSON line per command on stdin, one JSON answer
                          per line on the protocol fd), so that a driver can interleave them

Nothing here changes either implementation's computation: the harness-side patches of the
authors' code (build_ref) only avoid downloads and the 20-minute text encoding at build; the
edits of ../patch_reference.py in the authors' tree only let it run on a CPU.
"""
import argparse
import gc
import json
import os
import sys
import time

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # harness_common
from harness_common import (announce_ready, build_from, configure_ours_cpu_memory, log, memory_now, ours_load_weights,  # noqa: E402
                            protocol_file, reference_load_weights, reference_reuse_memory, reset_peak_rss,
                            rss_mb, run_task, say_goodbye)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=("ours", "ref"), required=True)
    p.add_argument("--root", required=True, help="repository root of this implementation")
    p.add_argument("--task", choices=("export-weights", "text-embeddings", "check-text", "serve"), required=True)
    p.add_argument("--workdir", required=True, help="folder for weights, embeddings, outputs")
    p.add_argument("--vocab", required=True, help="class-name JSON (A-150: datasets/ade150.json)")
    p.add_argument("--config", default="configs/convnextB_768.yaml", help="relative to --root")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reinit", choices=("none", "normal"), default="none",
                   help="normal: re-draw every weight (dim > 1) of the reference from N(0, 0.02), biases 0")
    p.add_argument("--fast", action="store_true", help="TEST.FAST_INFERENCE True")
    p.add_argument("--topk", type=int, default=8, help="TEST.TOPK")
    p.add_argument("--ours-opts", nargs="*", default=[], help="ours: extra config KEY VALUE pairs")
    p.add_argument("--ref-reuse-memory", action="store_true",
                   help="serve (ref): apply the same glibc mallopt setting as our CPU_REUSE_MEMORY")
    p.add_argument("--check-classes", default="0,1,2,75,149", help="check-text: class indices")
    return p.parse_args()


def vocab_names(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- the authors' code
def build_ref(args, *, stub_text=True):
    import open_clip
    import torch
    from detectron2.projects.deeplab import add_deeplab_config

    root = os.path.abspath(args.root)
    bundled = os.path.join(root, "open_clip", "src", "open_clip")
    if not os.path.abspath(open_clip.__file__).startswith(bundled):
        raise RuntimeError(f"open_clip comes from {open_clip.__file__}, not the bundled {bundled}")

    import sed  # the authors' package (registers SED, SEDHead, CLIP backbone)
    from sed import add_sed_config
    from sed.modeling.transformer import sed_predictor

    # Harness patch 1: random CLIP init. The predictor hard-codes the pretrained tag
    # ('laion_aesthetic_s13b_b82k'), which cannot be downloaded here.
    original_create = open_clip.create_model_and_transforms

    def create_random(*a, **kw):
        kw["pretrained"] = None
        if len(a) > 1:
            a = a[:1]
        return original_create(*a, **kw)

    open_clip.create_model_and_transforms = create_random
    # Harness patch 2: the predictor encodes the train and test vocabularies (80 templates)
    # while it is built (~20 min for 150 classes on 2 CPU cores). Build with placeholder
    # embeddings of the same shape; the real ones are injected into `text_features_test`.
    original_embed = sed_predictor.SEDPredictor.class_embeddings
    if stub_text:
        def placeholder(self, classnames, templates, clip_model):
            dim = clip_model.text_projection.shape[-1]
            return torch.zeros(len(templates), len(classnames), dim)

        sed_predictor.SEDPredictor.class_embeddings = placeholder

    vocab = os.path.abspath(args.vocab)
    try:
        return build_from(sed, root, [add_deeplab_config, add_sed_config], args.config, [
            "MODEL.DEVICE", "cpu",
            "MODEL.WEIGHTS", "",
            "MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "",
            "MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", vocab,
            "MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", vocab,
            "MODEL.SEM_SEG_HEAD.POOLING_SIZES", [1, 1],
            "TEST.FAST_INFERENCE", bool(args.fast),
            "TEST.TOPK", int(args.topk),
        ], seed=args.seed)
    finally:
        open_clip.create_model_and_transforms = original_create
        sed_predictor.SEDPredictor.class_embeddings = original_embed


def ref_inject_text(model, embeddings):
    # SEDPredictor.forward reads `text_features_test` (T, P, C) at inference.
    model.sem_seg_head.predictor.text_features_test = embeddings.float().clone()


# --------------------------------------------------------------------------- ours
def build_ours(args):
    import sed
    from sed.config import add_project_config

    vocab = os.path.abspath(args.vocab)
    return build_from(sed, args.root, [add_project_config], args.config, [
        "MODEL.DEVICE", "cpu",
        "MODEL.ENC.CLIP_PRETRAINED_WEIGHTS", "",
        "MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", vocab,
        "MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", vocab,
        "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", "",
        "MODEL.SEM_SEG_HEAD.POOLING_SIZES", [1, 1],
        "TEST.FAST_INFERENCE", bool(args.fast),
        "TEST.TOPK", int(args.topk),
        "TEST.PRECISION", "float32",
    ] + list(args.ours_opts), seed=args.seed, before_build=configure_ours_cpu_memory)


def ours_inject_text(model, embeddings):
    model.class_embeddings.put(model.test_class_names, embeddings)


# --------------------------------------------------------------------------- tasks
def reinit_normal(model, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif name.endswith("bias"):
                p.zero_()


def task_export_weights(args):
    import torch

    _, model = build_ref(args)
    if args.reinit == "normal":
        reinit_normal(model, args.seed)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    path = os.path.join(args.workdir, "weights_released_layout.pth")
    torch.save({"model": sd}, path)
    info = {
        "keys": len(sd),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "prefixes": sorted({".".join(k.split(".")[:4]) for k in sd}),
        "reinit": args.reinit,
        "seed": args.seed,
    }
    json.dump(info, open(os.path.join(args.workdir, "weights_info.json"), "w"), indent=1)
    log(json.dumps(info)[:2000])


def task_text_embeddings(args):
    import torch

    _, model = build_ours(args)
    found = ours_load_weights(model, os.path.join(args.workdir, "weights_released_layout.pth"))
    names = vocab_names(args.vocab)
    t0 = time.perf_counter()
    with torch.no_grad():
        emb = model.class_embeddings.compute(model.encoder.clip, names).float().cpu()
    seconds = time.perf_counter() - t0
    torch.save(emb, os.path.join(args.workdir, "text_embeddings.pt"))
    info = {"load": found, "shape": list(emb.shape), "encode_s": seconds,
            "parameters": int(sum(p.numel() for p in model.parameters()))}
    json.dump(info, open(os.path.join(args.workdir, "ours_load_and_text.json"), "w"), indent=1)
    log(json.dumps(info)[:2000])


def task_check_text(args):
    import torch
    from sed.third_party import imagenet_templates

    _, model = build_ref(args)
    state = torch.load(os.path.join(args.workdir, "weights_released_layout.pth"), map_location="cpu")["model"]
    model.load_state_dict(state, strict=True)
    ours = torch.load(os.path.join(args.workdir, "text_embeddings.pt"))
    names = vocab_names(args.vocab)
    idx = [int(i) for i in args.check_classes.split(",")]
    predictor = model.sem_seg_head.predictor
    t0 = time.perf_counter()
    ref = predictor.class_embeddings([names[i] for i in idx], imagenet_templates.IMAGENET_TEMPLATES,
                                     predictor.clip_model).permute(1, 0, 2).float()
    seconds = time.perf_counter() - t0
    diff = (ref - ours[idx]).abs()
    info = {
        "classes": {str(i): names[i] for i in idx},
        "max_abs_diff": float(diff.max()),
        "per_class_max_abs_diff": [float(d) for d in diff.flatten(1).max(dim=1).values],
        "bitwise_identical": bool(torch.equal(ref, ours[idx])),
        "reference_encode_s": seconds,
        # How distinct the random text tower makes the classes (1.0: all the same direction).
        "mean_offdiag_cosine_of_class_means": None,
    }
    mean = torch.nn.functional.normalize(ours.mean(dim=1), dim=-1)
    cos = mean @ mean.T
    n = cos.shape[0]
    info["mean_offdiag_cosine_of_class_means"] = float((cos.sum() - cos.diagonal().sum()) / (n * n - n))
    json.dump(info, open(os.path.join(args.workdir, "text_check.json"), "w"), indent=1)
    log(json.dumps(info))


def task_serve(args):
    import torch

    proto = protocol_file()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    weights = os.path.join(args.workdir, "weights_released_layout.pth")
    load_info = None
    if args.impl == "ref":
        if args.ref_reuse_memory:
            reference_reuse_memory()
        _, model = build_ref(args)
        load_info = reference_load_weights(model, weights)
        inject = ref_inject_text
    else:
        _, model = build_ours(args)
        load_info = ours_load_weights(model, weights)
        inject = ours_inject_text
    inject(model, torch.load(os.path.join(args.workdir, "text_embeddings.pt")))
    image = torch.load(os.path.join(args.workdir, "image.pt"))
    inputs = [{"image": image, "height": int(image.shape[1]), "width": int(image.shape[2])}]
    build_s = time.perf_counter() - t0
    gc.collect()
    rss_before = rss_mb("VmRSS")
    peak_reset = reset_peak_rss()
    announce_ready(proto, args.impl, model, build_s, load_info, rss_after_build_mb=rss_before, peak_reset=peak_reset)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") == "quit":
            break
        start = time.perf_counter()
        with torch.no_grad():
            out = model(inputs)[0]["sem_seg"]
        seconds = time.perf_counter() - start
        answer = {"seconds": seconds, "shape": list(out.shape), "dtype": str(out.dtype)}
        if cmd.get("save"):
            torch.save(out.detach().cpu().contiguous(), cmd["save"])
            answer["saved"] = cmd["save"]
        answer["classes_nonzero"] = int((out.flatten(1).abs().amax(dim=1) > 0).sum())
        answer.update(memory_now())
        del out
        proto.write(json.dumps(answer) + "\n")
    say_goodbye(proto)


def main():
    run_task(parse_args(), {
        "export-weights": task_export_weights,
        "text-embeddings": task_text_embeddings,
        "check-text": task_check_text,
        "serve": task_serve,
    })


if __name__ == "__main__":
    main()
