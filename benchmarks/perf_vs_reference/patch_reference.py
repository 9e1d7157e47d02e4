"""Patch a checkout of the authors' code so that the harness can run it on a CPU.

    python patch_reference.py sed PATH        # a checkout of xb534/SED
    python patch_reference.py eov_seg PATH    # a checkout of nhw649/EOV-Seg
    python patch_reference.py --check sed PATH

The edits (``PATCHES``) only let the authors' code run on a CPU with this project's package
versions; none changes what it computes. Each edit replaces one exact text of the authors'
file. If a file has neither that text nor its replacement (another commit of the authors'
repository), the script stops, names the file and leaves every file as it was. Running it
twice changes nothing. ``--check`` only reports; the drivers (``compare.py``) run the same
check and stop with a message if the tree is not patched.
"""
import argparse
import os
import sys

# The authors' commits these edits are written for (their repositories' latest).
KNOWN_COMMITS = {"sed": "db20d93c0ec8b0ce7fae267a10f826dfc7da15f5",
                 "eov_seg": "6f5e93e9aca6ccae89fe492b24018f8530075fc4"}
# name -> (repository, [(file, description, [(old, new), ...]), ...])
PATCHES = {
    "sed": ("xb534/SED", [
        ("sed/modeling/transformer/sed_predictor.py",
         "SEDPredictor.class_embeddings: 3 x `.cuda()` -> "
         "`.to((\"cuda\" if torch.cuda.is_available() else \"cpu\"))`",
         [("texts = self.tokenizer(texts).cuda()",
           "texts = self.tokenizer(texts).to((\"cuda\" if torch.cuda.is_available() else \"cpu\"))"),
          ("texts = clip.tokenize(texts).cuda()",
           "texts = clip.tokenize(texts).to((\"cuda\" if torch.cuda.is_available() else \"cpu\"))"),
          ("zeroshot_weights = torch.stack(zeroshot_weights, dim=1).cuda()",
           "zeroshot_weights = torch.stack(zeroshot_weights, dim=1).to("
           "(\"cuda\" if torch.cuda.is_available() else \"cpu\"))")]),
        ("sed/modeling/transformer/model.py",
         "Aggregator.fast_conv_decoder: `torch.zeros([B, T, H, W]).cuda()` -> "
         "`torch.zeros([B, T, H, W], device=corr_embed.device)` (else the fast path cannot run on CPU)",
         [("output = torch.zeros([B, T, H, W]).cuda()",
           "output = torch.zeros([B, T, H, W], device=corr_embed.device)")]),
    ]),
    "eov_seg": ("nhw649/EOV-Seg", [
        ("eov_seg/modeling/backbone/clip.py",
         "CLIP.encode_text: the two permutes NLD->LND / LND->NLD around clip_model.transformer "
         "removed (open_clip 3.x transformers are batch-first)",
         [("        x = x.permute(1, 0, 2)  # NLD -> LND\n"
           "        x = self.clip_model.transformer(x, attn_mask=self.clip_model.attn_mask)\n"
           "        x = x.permute(1, 0, 2)  # LND -> NLD\n",
           "        x = self.clip_model.transformer(x, attn_mask=self.clip_model.attn_mask)\n")]),
        ("eov_seg/modeling/backbone/clip.py",
         "CLIP.extract_features_vit: no permute to LND before visual.transformer.resblocks[0]; class "
         "token dropped with [:, 1:] instead of [1:]; permute(0, 2, 1) instead of permute(1, 2, 0) "
         "(same reason)",
         [("        x = x.permute(1, 0, 2)  # [B, N, C] -> [N, B, C]\n"
           "        # first block\n"
           "        x = self.clip_model.visual.transformer.resblocks[0](x)[1:]\n",
           "        # first block\n"
           "        x = self.clip_model.visual.transformer.resblocks[0](x)[:, 1:]\n"),
          ("        x = x.permute(1, 2, 0).contiguous()  # [B, C, N]\n",
           "        x = x.permute(0, 2, 1).contiguous()  # [B, C, N]\n")]),
        ("eov_seg/modeling/backbone/clip.py",
         "CLIP.visual_prediction_forward_resnet: line `num_masks = num_masks.to(query.device)` removed "
         "(num_masks is a Python int: AttributeError; S / RN50 only)",
         [("        num_masks = num_masks.to(query.device)\n", "")]),
    ]),
}


def descriptions(name):
    """The edits of ``name`` in words, as the drivers record them in their JSON."""
    return [f"{path}, {what}" for path, what, _ in PATCHES[name][1]]


def _plan(name, root):
    """The new text of every file to patch, and what is wrong; nothing is written."""
    repo, patches = PATCHES[name]
    texts, problems, pending = {}, [], 0
    for path, what, edits in patches:
        full = os.path.join(root, path)
        if path not in texts:
            if not os.path.isfile(full):
                problems.append(f"{full} does not exist: is {root} a checkout of {repo}?")
                continue
            with open(full, encoding="utf-8") as f:
                texts[path] = f.read()
        for old, new in edits:
            text = texts[path]
            found = text.count(old)
            if found == 1:
                texts[path] = text.replace(old, new)
                pending += 1
            elif found > 1:
                problems.append(f"{full}: the text to replace occurs {found} times ({what})")
            elif new and new not in text:
                problems.append(f"{full}: neither the authors' text nor the patched one found ({what}); "
                                f"this script knows {repo} at its commit {KNOWN_COMMITS[name]}")
            # else: already patched (a removed line is simply absent)
    return texts, problems, pending


def check(name, root):
    """Problems that stop the harness with ``root`` as the authors' ``name`` tree; [] when it
    is patched."""
    repo = PATCHES[name][0]
    package = os.path.join(root, name, "__init__.py")
    if not os.path.isfile(package):
        return [f"{root} is not a checkout of {repo} ({package} does not exist)"]
    _, problems, pending = _plan(name, root)
    problems = list(dict.fromkeys(problems))
    if pending:
        problems.append(f"{root} is not patched for the CPU ({pending} edits left): run "
                        f"python {os.path.abspath(__file__)} {name} {root}")
    return problems


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(PATCHES), help="which authors' repository: sed = xb534/SED, "
                                                         "eov_seg = nhw649/EOV-Seg")
    p.add_argument("root", help="the checkout of that repository (its top folder)")
    p.add_argument("--check", action="store_true", help="only report whether the checkout is patched")
    args = p.parse_args()
    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
        sys.exit(f"{root} is not a folder")
    if args.check:
        problems = check(args.name, root)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{root}: patched")
        sys.exit(1 if problems else 0)
    texts, problems, pending = _plan(args.name, root)
    if problems:
        sys.exit("nothing changed:\n  " + "\n  ".join(dict.fromkeys(problems)))
    if not pending:
        print(f"{root}: already patched")
        return
    for path, text in texts.items():
        with open(os.path.join(root, path), "w", encoding="utf-8") as f:
            f.write(text)
    for line in descriptions(args.name):
        print("patched:", line)


if __name__ == "__main__":
    main()
