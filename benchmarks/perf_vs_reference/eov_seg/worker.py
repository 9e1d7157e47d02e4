"""One EOV-Seg implementation in its own process: the authors' (nhw649/EOV-Seg), or ours.

Started by ``compare.py``. Both implementations register a detectron2 meta-architecture named
``EOV_SEG`` (and both may ship a package named ``eov_seg``), so they never share a process.

Tasks:
  prepare  (ref)   build the authors' model (random CLIP weights, fixed seed), encode the test
                   vocabulary's prompts once with the authors' own text path (timed), and save
                   into --workdir/<size>/:
                     weights_released_layout.pth  {"model": state_dict}  (for our checkpointer)
                     text_classifier.pt           (C, D) float32, what EOV_SEG.get_text_classifier
                                                  caches in `test_text_classifier`
                     prepare.json                 timings, parameter counts, text check
  serve    (both)  load weights + text classifier, then run forward passes on command (one
                   JSON line per command on stdin, one JSON answer per line on the protocol fd)
                   so that a driver can interleave implementations.

The image (image.pt) is written by compare.py. Nothing here changes the authors' computation;
the harness-side patches (install_cpu_patches, build_ref) only make it build and run on a CPU
without downloads, next to the edits of ../patch_reference.py in the authors' tree.
"""
import argparse
import gc
import json
import math
import os
import sys
import time

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # harness_common
from harness_common import (announce_ready, build_from, configure_ours_cpu_memory, log, memory_now, ours_load_weights,  # noqa: E402
                            protocol_file, reference_load_weights, reference_reuse_memory, reset_peak_rss,
                            rss_mb, ru_maxrss_mb, run_task, say_goodbye)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=("ref", "ours"), required=True)
    p.add_argument("--root", required=True, help="repository root of this implementation")
    p.add_argument("--task", choices=("prepare", "time-text", "serve"), required=True)
    p.add_argument("--workdir", required=True, help="folder for weights, text classifier, outputs (per size)")
    p.add_argument("--config", required=True, help="config file, relative to --root")
    p.add_argument("--train-vocab", required=True, help="JSON list of {name, isthing} (COCO panoptic 133)")
    p.add_argument("--test-vocab", required=True, help="JSON list of {name, isthing} (ADE20K 150)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text-chunks", type=int, default=0,
                   help="prepare: 0 = run the authors' get_text_classifier over the whole vocabulary "
                        "(timed); k > 0 = time only the first k chunks of 128 prompts with the authors' "
                        "code, extrapolate, and compute the full classifier with the exact "
                        "short-context shortcut (see text_classifier_short_context)")
    p.add_argument("--reinit", choices=("none", "heads"), default="none",
                   help="prepare: heads = re-draw the trainable (non-CLIP) weights from scaled Gaussians "
                        "(fan-in scaled matrices, object kernels N(0,1), norm weights 1+0.2N, biases 0.1N; "
                        "generator seeded with --seed) so that random outputs are not degenerate (the "
                        "default init zeroes the DCN offsets and gives one panoptic segment); "
                        "none = the authors' init")
    p.add_argument("--ours-opts", nargs="*", default=[], help="serve (ours): extra config KEY VALUE pairs")
    p.add_argument("--ref-reuse-memory", action="store_true",
                   help="serve (ref): apply the same glibc mallopt setting as our CPU_REUSE_MEMORY")
    p.add_argument("--spread-text", action="store_true",
                   help="prepare: inject seeded random unit rows as the text classifier (see task_prepare)")
    p.add_argument("--semantic-extra", action="store_true",
                   help="serve: answer 'semantic' commands (an untimed extra pass with SEMANTIC_ON)")
    return p.parse_args()


def load_vocab(path):
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    return [{"name": e["name"], "isthing": bool(e["isthing"])} for e in entries]


# --------------------------------------------------------------------------- the authors' code
def install_cpu_patches():
    """Harness-side patches (recorded as ``harness_patches`` in the JSON). Must run before the
    authors' package is imported."""
    import types
    import torch
    import torchvision
    from torch import nn
    from torch.nn.modules.utils import _pair
    import detectron2.layers as d2l
    import detectron2.layers.deform_conv as d2dc

    class ModulatedDeformConvTorchvision(nn.Module):
        """Same signature and parameters as detectron2.layers.ModulatedDeformConv (DCNv2), computed by
        torchvision.ops.deform_conv2d with a mask (detectron2's op needs the compiled, CUDA-only _C)."""

        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                     groups=1, deformable_groups=1, bias=True, norm=None, activation=None):
            super().__init__()
            self.in_channels, self.out_channels = in_channels, out_channels
            self.kernel_size = _pair(kernel_size)
            self.stride, self.padding, self.dilation = stride, padding, dilation
            self.groups, self.deformable_groups = groups, deformable_groups
            self.with_bias = bias
            self.norm, self.activation = norm, activation
            self.weight = nn.Parameter(torch.Tensor(out_channels, in_channels // groups, *self.kernel_size))
            self.bias = nn.Parameter(torch.Tensor(out_channels)) if bias else None
            nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
            if self.bias is not None:
                nn.init.constant_(self.bias, 0)

        def forward(self, x, offset, mask):
            x = torchvision.ops.deform_conv2d(x, offset, self.weight, self.bias, stride=_pair(self.stride),
                                              padding=_pair(self.padding), dilation=_pair(self.dilation),
                                              mask=mask)
            if self.norm is not None:
                x = self.norm(x)
            if self.activation is not None:
                x = self.activation(x)
            return x

    d2l.ModulatedDeformConv = ModulatedDeformConvTorchvision
    d2dc.ModulatedDeformConv = ModulatedDeformConvTorchvision
    try:
        import detectron2.evaluation.fast_eval_api  # noqa: F401
    except ImportError:  # needs detectron2._C; imported by the authors' package, unused by the model
        m = types.ModuleType("detectron2.evaluation.fast_eval_api")
        from pycocotools.cocoeval import COCOeval
        m.COCOeval_opt = COCOeval
        sys.modules["detectron2.evaluation.fast_eval_api"] = m


def register_vocab(name, entries):
    """Metadata the way the authors' openvocab_* registrations expose it to EOV_SEG: stuff_classes =
    all classes (synonyms comma-separated), thing_classes = the things, contiguous ids = list index."""
    from detectron2.data import MetadataCatalog

    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        stuff_classes=[e["name"] for e in entries],
        thing_classes=[e["name"] for e in entries if e["isthing"]],
        thing_dataset_id_to_contiguous_id={i: i for i, e in enumerate(entries) if e["isthing"]},
        stuff_dataset_id_to_contiguous_id={i: i for i in range(len(entries))},
    )
    return name


def build_ref(args):
    install_cpu_patches()
    import eov_seg  # the authors' package: registers EOV_SEG and its CLIP backbone
    from eov_seg import add_eov_config

    return build_from(eov_seg, args.root, [add_eov_config], args.config, [
        "MODEL.DEVICE", "cpu",
        "MODEL.WEIGHTS", "",
        "MODEL.OV_HEAD.CLIP_PRETRAINED_WEIGHTS", "",
        "MODEL.OV_HEAD.CLIP_VIT_PRETRAINED_WEIGHTS", "",
        "DATASETS.TRAIN", (register_vocab("perf_eov_train", load_vocab(args.train_vocab)),),
        "DATASETS.TEST", (register_vocab("perf_eov_test", load_vocab(args.test_vocab)),),
    ], seed=args.seed)


def ref_inject_text(model, classifier):
    # EOV_SEG.get_text_classifier (eval) returns `test_text_classifier` when it is not None and
    # computes it only otherwise; forward never resets it (only set_metadata does).
    model.test_text_classifier = classifier.float().clone()


def ref_set_semantic(model, on):
    model.semantic_on = bool(on)


# --------------------------------------------------------------------------- ours
# >>> OURS: this project's EOV_SEG (package ``sed``), built from configs/eov_seg/*.yaml the way its
# entry points build it (CPU_REUSE_MEMORY applied by configure_cpu_memory, as in tools/benchmark.py
# and the predictor), CLIP pretrained tags "" (random towers, replaced by the reference's weights),
# no disk text cache, the harness's vocabulary files.
def build_ours(args):
    import sed
    from sed.config import add_project_config

    return build_from(sed, args.root, [add_project_config], args.config, [
        "MODEL.DEVICE", "cpu",
        "MODEL.WEIGHTS", "",
        "MODEL.OV_HEAD.CLIP_PRETRAINED_WEIGHTS", "",
        "MODEL.OV_HEAD.CLIP_VIT_PRETRAINED_WEIGHTS", "",
        "MODEL.EOV_SEG.TRAIN_CLASS_JSON", args.train_vocab,
        "MODEL.EOV_SEG.TEST_CLASS_JSON", args.test_vocab,
        "MODEL.EOV_SEG.TEXT_CACHE_DIR", "",
    ] + list(args.ours_opts), before_build=configure_ours_cpu_memory)


def ours_inject_text(model, classifier):
    """The reference's (S, D) per-synonym classifier is what our per-name cache holds for the
    test vocabulary (class by class, synonyms in file order)."""
    model.class_embeddings.put(model.test_vocabulary.names, classifier)


def ours_set_semantic(model, on):
    model.semantic_on = bool(on)
# <<< OURS


# --------------------------------------------------------------------------- text classifier
def text_classifier_short_context(backbone, prompts, num_prompt_templates, bs=128):
    """Same result as the authors' EOV_SEG.get_text_classifier, computed on a context cut after the
    longest prompt's end-of-text token. CLIP's text tower is causal (attn_mask), so the features at
    each end-of-text position do not depend on the padded positions after it: this is exact up to
    float rounding (checked against the authors' code on the timed chunks)."""
    import torch

    clip = backbone.clip_model
    feats = []
    with torch.no_grad():
        for i in range(0, len(prompts), bs):
            tokens = backbone.tokenize_text(prompts[i:i + bs])
            eot = tokens.argmax(dim=-1)
            n = int(eot.max()) + 1
            x = clip.token_embedding(tokens[:, :n]) + clip.positional_embedding[:n]
            x = clip.transformer(x, attn_mask=clip.attn_mask[:n, :n])
            x = clip.ln_final(x)
            feats.append(x[torch.arange(x.shape[0]), eot] @ clip.text_projection)
    t = torch.cat(feats, dim=0)
    t = t / t.norm(dim=-1, keepdim=True)
    t = t.reshape(t.shape[0] // num_prompt_templates, num_prompt_templates, t.shape[-1]).mean(1)
    return t / t.norm(dim=-1, keepdim=True)


def reinit_heads(model, seed):
    """Re-draw every parameter outside the two CLIP models (lite_aggr, light_weight_decoder,
    void_embedding); the CLIP towers keep open_clip's random init. Biases are 0 and the
    decoder stages' logit scales at CLIP's clamp (100), so that proposals differ from each other
    and their class scores are peaked (else every proposal takes the same class)."""
    import torch

    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".clip_model." in name:
                continue
            if "object_kernels" in name or "void_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("logit_scale"):
                p.fill_(math.log(100.0))
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def suppress_void(model, classifier, image_path):
    """With random heads every proposal's class embedding points nearly the same way, and the void
    class won every proposal: the panoptic output had no segment at all, so comparing it compared
    nothing. One forward pass on the harness image measures the mean direction u of the last decoder
    stage's class embeddings; the void embedding is set to -u, so void loses and the panoptic
    post-processing has proposals (segments) to work on. A second pass counts them."""
    import torch
    import torch.nn.functional as F

    ref_inject_text(model, classifier)
    image = torch.load(image_path)
    inputs = [{"image": image.float(), "height": int(image.shape[1]), "width": int(image.shape[2])}]
    captured = []
    hook = model.light_weight_decoder.mask_heads[-1].class_embed.register_forward_hook(
        lambda m, i, o: captured.append(o.detach()))
    t0 = time.perf_counter()
    with torch.no_grad():
        model(inputs)
        u = F.normalize(captured[-1].flatten(0, -2).mean(0), dim=-1)
        model.void_embedding.weight.copy_(-u[None])
        pan, segments = model(inputs)[0]["panoptic_seg"]
    hook.remove()
    info = {"void_embedding": "-mean direction of the last stage's class embeddings (one pass, harness image)",
            "segments_after": len(segments), "segment_classes_after": sorted({s["category_id"] for s in segments}),
            "pixels_unassigned_after": int((pan == 0).sum()), "seconds": time.perf_counter() - t0}
    log("suppress_void", json.dumps(info))
    return info


def param_groups(model):
    groups = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        if parts[0] in ("cnn_backbone", "vit_backbone") and len(parts) > 2:
            sub = parts[2]
            tower = "visual" if sub == "visual" else ("logit_scale" if sub == "logit_scale" else "text")
            key = f"{parts[0]}.clip_model.{tower}"
        else:
            key = parts[0]
        groups[key] = groups.get(key, 0) + p.numel()
    return groups


def task_prepare(args):
    import torch

    t0 = time.perf_counter()
    cfg, model = build_ref(args)
    from eov_seg.modeling.meta_arch.segmentator import VILD_PROMPT  # after build_ref's patches
    build_s = time.perf_counter() - t0
    if args.reinit == "heads":
        reinit_heads(model, args.seed)
    info = {
        "config": args.config, "seed": args.seed, "reinit": args.reinit, "build_s": build_s,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "parameter_groups": param_groups(model),
        "buffers": int(sum(b.numel() for b in model.buffers())),
        "clip_model_name": cfg.MODEL.OV_HEAD.CLIP_MODEL_NAME,
        "clip_vit_model_name": cfg.MODEL.OV_HEAD.CLIP_VIT_MODEL_NAME,
        "num_classes_test": len(model.test_num_templates),
        "num_synonyms_test": int(sum(model.test_num_templates)),
        "num_prompts_test": len(model.test_class_names),
        "templates": len(VILD_PROMPT),
        "category_overlapping": int(model.category_overlapping_mask.sum()),
        "text_context_length": int(model.cnn_backbone.clip_model.positional_embedding.shape[0]),
    }
    prompts = model.test_class_names
    bs = 128  # the authors' chunk size in EOV_SEG.get_text_classifier
    n_chunks = math.ceil(len(prompts) / bs)
    if args.text_chunks <= 0 or args.text_chunks >= n_chunks:
        model.test_text_classifier = None
        t1 = time.perf_counter()
        with torch.no_grad():
            classifier, _ = model.get_text_classifier()  # the authors' code, whole vocabulary
        info["text"] = {"mode": "authors_full", "chunks": n_chunks, "seconds": time.perf_counter() - t1}
    else:
        k = args.text_chunks
        times = []
        ref_feats = []
        for i in range(k):
            t1 = time.perf_counter()
            ref_feats.append(model.cnn_backbone.get_text_classifier(prompts[i * bs:(i + 1) * bs], model.device))
            times.append(time.perf_counter() - t1)
        per_prompt = sum(times) / (k * bs)
        # check the shortcut on exactly those prompts (un-normalised features)
        clip = model.cnn_backbone.clip_model
        with torch.no_grad():
            tokens = model.cnn_backbone.tokenize_text(prompts[:k * bs])
            eot = tokens.argmax(dim=-1)
            n = int(eot.max()) + 1
            x = clip.token_embedding(tokens[:, :n]) + clip.positional_embedding[:n]
            x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:n, :n]))
            short = x[torch.arange(x.shape[0]), eot] @ clip.text_projection
        full = torch.cat(ref_feats)
        t2 = time.perf_counter()
        classifier = text_classifier_short_context(model.cnn_backbone, prompts, len(VILD_PROMPT), bs)
        info["text"] = {
            "mode": "authors_partial_timed+short_context_values",
            "chunks_timed": k, "chunk_seconds": times,
            "seconds_extrapolated": per_prompt * len(prompts),
            "short_context_seconds": time.perf_counter() - t2,
            "short_context_length": int(max(model.cnn_backbone.tokenize_text(prompts).argmax(-1)) + 1),
            "check_max_abs_diff_vs_authors": float((short - full).abs().max()),
            "check_max_abs_feature": float(full.abs().max()),
        }
    classifier = classifier.detach().float().contiguous()
    if args.spread_text:
        # The random text tower maps every name to nearly one direction (mean cosine ~0.95), so
        # every proposal gets the same class and the panoptic output is one segment. Both
        # implementations get these seeded random unit rows instead (same shape), so that
        # the panoptic outputs compared have many segments and classes.
        torch.save(classifier, os.path.join(args.workdir, "text_classifier_authors.pt"))
        g = torch.Generator().manual_seed(args.seed + 2000)
        classifier = torch.nn.functional.normalize(torch.randn(classifier.shape, generator=g), dim=-1)
        info["text"]["injected"] = "seeded random unit rows (--spread-text), authors' values in text_classifier_authors.pt"
    torch.save(classifier, os.path.join(args.workdir, "text_classifier.pt"))
    if args.reinit == "heads":
        info["void"] = suppress_void(model, classifier, os.path.join(os.path.dirname(os.path.abspath(args.workdir)),
                                                                     "image.pt"))
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save({"model": sd}, os.path.join(args.workdir, "weights_released_layout.pth"))
    del sd
    cos = classifier @ classifier.T
    c = cos.shape[0]
    info["text"]["shape"] = list(classifier.shape)
    info["text"]["mean_offdiag_cosine"] = float((cos.sum() - cos.diagonal().sum()) / (c * c - c))
    info["rss_mb"] = rss_mb("VmRSS")
    info["peak_rss_mb"] = ru_maxrss_mb()
    with open(os.path.join(args.workdir, "prepare.json"), "w") as f:
        json.dump(info, f, indent=1)
    log(json.dumps(info))


def task_time_text(args):
    """Time the authors' text path (CLIP.get_text_classifier on chunks of 128 prompts, the loop body of
    EOV_SEG.get_text_classifier) on the first --text-chunks chunks (0: all) with the saved weights;
    every full chunk has the same shape (128 x 77 tokens), so the cost per prompt is constant."""
    import torch

    _, model = build_ref(args)
    state = torch.load(os.path.join(args.workdir, "weights_released_layout.pth"), map_location="cpu")["model"]
    model.load_state_dict(state, strict=True)
    del state
    prompts, bs = model.test_class_names, 128
    n_chunks = math.ceil(len(prompts) / bs)
    k = n_chunks if args.text_chunks <= 0 else min(args.text_chunks, n_chunks)
    times = []
    for i in range(k):
        t1 = time.perf_counter()
        model.cnn_backbone.get_text_classifier(prompts[i * bs:(i + 1) * bs], model.device)
        times.append(time.perf_counter() - t1)
    n = min(len(prompts), k * bs)
    info = {"chunks_timed": k, "chunks_total": n_chunks, "prompts": len(prompts), "chunk_seconds": times,
            "seconds_per_prompt": sum(times) / n,
            "seconds_whole_vocabulary": sum(times) if k == n_chunks else sum(times) / n * len(prompts),
            "extrapolated": k < n_chunks}
    with open(os.path.join(args.workdir, "text_timing.json"), "w") as f:
        json.dump(info, f, indent=1)
    log(json.dumps(info))


def ref_profile_hooks(model):
    """Wall time per top-level part of the authors' EOV_SEG forward (and of its deformable
    convolutions), through forward hooks; the rest of the forward (normalisation, CLIP mask pooling,
    ensembling, upsampling, panoptic inference) is reported as 'other'."""
    parts = {n: getattr(model, n) for n in ("cnn_backbone", "vit_backbone", "lite_aggr", "light_weight_decoder")}
    dcn = [m for m in model.modules() if type(m).__name__ in ("ModulatedDeformConvTorchvision", "ModulatedDeformConv")]
    acc, handles, start = {}, [], {}

    def add(name, mod):
        def pre(m, i):
            start[name] = time.perf_counter()

        def post(m, i, o):
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - start.pop(name)
        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))

    for n, m in parts.items():
        add(n, m)
    for k, m in enumerate(dcn):
        add(f"deform_conv_{k}", m)
    return acc, handles


def task_serve(args):
    import torch

    proto = protocol_file()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    weights = os.path.join(args.workdir, "weights_released_layout.pth")
    if args.impl == "ref":
        if args.ref_reuse_memory:
            reference_reuse_memory()
        _, model = build_ref(args)
        load_info = reference_load_weights(model, weights)
        inject, set_semantic = ref_inject_text, ref_set_semantic
    else:
        _, model = build_ours(args)
        load_info = ours_load_weights(model, weights)
        inject, set_semantic = ours_inject_text, ours_set_semantic
    inject(model, torch.load(os.path.join(args.workdir, "text_classifier.pt")))
    image = torch.load(os.path.join(os.path.dirname(os.path.abspath(args.workdir)), "image.pt"))
    inputs = [{"image": image.float(), "height": int(image.shape[1]), "width": int(image.shape[2])}]
    build_s = time.perf_counter() - t0
    gc.collect()
    rss_after_build = rss_mb("VmRSS")
    peak_after_build = ru_maxrss_mb()
    peak_reset = reset_peak_rss()
    announce_ready(proto, args.impl, model, build_s, load_info, rss_after_build_mb=rss_after_build,
                   peak_rss_after_build_mb=peak_after_build, peak_reset=peak_reset)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") == "quit":
            break
        semantic = cmd.get("cmd") == "semantic"
        loose = cmd.get("cmd") == "loose"
        if loose:  # both implementations read this attribute at each call
            saved_threshold, model.overlap_threshold = model.overlap_threshold, 0.0
        profile = None
        if cmd.get("cmd") == "profile":
            profile, handles = ref_profile_hooks(model)
        if semantic:
            set_semantic(model, True)
        load_before = os.getloadavg()[0]
        cpu0 = time.process_time()
        start = time.perf_counter()
        with torch.no_grad():
            out = model(inputs)[0]
        seconds = time.perf_counter() - start
        cpu_s = time.process_time() - cpu0
        if semantic:
            set_semantic(model, False)
        if loose:
            model.overlap_threshold = saved_threshold
        if profile is not None:
            for h in handles:
                h.remove()
            dcn_total = sum(v for k, v in profile.items() if k.startswith("deform_conv_"))
            profile = {k: v for k, v in profile.items() if not k.startswith("deform_conv_")}
            profile["deform_convs_in_lite_aggr"] = dcn_total
            profile["other"] = seconds - sum(v for k, v in profile.items() if k != "deform_convs_in_lite_aggr")
        pan, segments = out["panoptic_seg"]
        answer = {"seconds": seconds, "cpu_s": cpu_s, "profile_s": profile, "loadavg1_before": load_before,
                  "loadavg1_after": os.getloadavg()[0], "num_segments": len(segments),
                  "segment_classes": sorted({s["category_id"] for s in segments}),
                  "pixels_unassigned": int((pan == 0).sum())}
        if cmd.get("save"):
            saved = {"panoptic_seg": pan.detach().cpu().clone(), "segments_info": segments}
            if "sem_seg" in out:
                saved["sem_seg"] = out["sem_seg"].detach().cpu().clone()
            torch.save(saved, cmd["save"])
            answer["saved"] = cmd["save"]
        answer.update(memory_now())
        del out
        proto.write(json.dumps(answer) + "\n")
    say_goodbye(proto)


def main():
    run_task(parse_args(), {"prepare": task_prepare, "time-text": task_time_text, "serve": task_serve})


if __name__ == "__main__":
    main()
