"""Export a model of any family that declares an export (SED, EOV-Seg; the config's
MODEL.META_ARCHITECTURE picks it) to ONNX, with the vocabulary open, and check the file with
onnxruntime (also ``python -m sed.tools.export`` or ``sed-export``).

    python tools/export.py --config-file configs/convnextB_768.yaml --dynamic --output sed.onnx \\
        --text-encoder sed_text.onnx --opts MODEL.WEIGHTS model.pth
    python tools/export.py --config-file configs/eov_seg/eov_seg_R50.yaml --height 640 --width 864 \\
        --output eov_seg.onnx --opts MODEL.WEIGHTS model.pth

--output gets the image side with the class text embeddings as inputs (any number of classes
at run time): for one image size (--height/--width, by default the family's, listed below;
EOV-Seg: of the padded canvas, a multiple of SIZE_DIVISIBILITY) or any (--dynamic).
--text-encoder gets the CLIP text tower, so that a vocabulary can be embedded outside PyTorch
too. The graphs' inputs and outputs are in sed/export.py; sed/deploy.py runs them
(pre-processing, vocabulary embeddings, the family's post-processing in NumPy). Each file is run with onnxruntime on a random input and compared
with PyTorch (the largest difference is printed, of probabilities for EOV-Seg's
log-probabilities and mask logits; --no-check skips it). Whatever cannot be exported stops
the export, naming the operator and module.

With TEST.FAST_INFERENCE True (SED) the graph holds category early rejection. Without
MODEL.WEIGHTS the weights are random (seed 0, as sed.tools.benchmark's): add
MODEL.ENC.CLIP_PRETRAINED_WEIGHTS "" (SED) or MODEL.OV_HEAD.CLIP_PRETRAINED_WEIGHTS ""
MODEL.OV_HEAD.CLIP_VIT_PRETRAINED_WEIGHTS "" (EOV-Seg) so that no CLIP weights are downloaded.

The folders of --output and --text-encoder are created if missing; a path that is a folder or
cannot be written stops before the export with one line "export.py: error: ..." (exit status 2,
as for wrong options); an export or check that fails with one line and status 1 (--debug adds
the traceback).
"""
import argparse
import json
import logging
import sys
import time
from typing import Optional, Sequence

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from sed.checkpoint import Checkpointer, check_weights_given
from sed.config import build_config
from sed.export import export_image_side, export_text_tower
from sed.family import families, get_family
from sed.predictor import load_config
from sed.tools import cli

logger = logging.getLogger("sed.export")


def default_sizes() -> str:
    """The example input size of each family that exports, for --help."""
    return "; ".join(f"{f.title} {f.export.default_size[0]} x {f.export.default_size[1]}" for f in families()
                     if f.export is not None)


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, epilog=f"Default --height x --width: {default_sizes()}.")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", default="", help="ONNX file of the image side (its folder is created if missing)")
    parser.add_argument("--text-encoder", default="",
                        help="ONNX file of the text tower (its folder is created if missing)")
    parser.add_argument("--height", type=cli.non_negative_int, default=0,
                        help="input height (default, or 0: the family's, below)")
    parser.add_argument("--width", type=cli.non_negative_int, default=0,
                        help="input width (default, or 0: the family's, below)")
    parser.add_argument("--dynamic", action="store_true", help="any input size at run time")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime run against PyTorch")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Options that do not go together, and output files that cannot be written (their folders
    are created), stop with a :class:`sed.tools.cli.UsageError` before any export."""
    if not (args.output or args.text_encoder):
        raise cli.UsageError("give --output (image side) and/or --text-encoder (text tower)")
    if args.dynamic and (args.height or args.width):
        raise cli.UsageError("--dynamic takes any size: leave out --height/--width")
    if bool(args.height) != bool(args.width):
        raise cli.UsageError("give both --height and --width")
    for option, path in (("--output", args.output), ("--text-encoder", args.text_encoder)):
        if path:
            cli.output_file(path, option)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run_cli(build_parser(), export, argv)


def export(args: argparse.Namespace) -> int:
    """Check the options, build the model and write (and check) the files asked for."""
    check_args(args)
    setup_logger(name="sed")
    family = get_family(build_config(args.config_file, args.opts))
    # Every output the predictor gives (e.g. EOV-Seg's post-processing switches), on the CPU.
    cfg = load_config(args.config_file, opts=[*family.predictor_opts, *args.opts, "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)  # random weights: those of sed.tools.benchmark
    check_weights_given(cfg)
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    report = {}
    if args.output:
        start = time.perf_counter()
        logger.info("Exporting the image side of %s to %s", family.title, args.output)
        report[args.output] = export_image_side(model, cfg, args.output, height=args.height, width=args.width,
                                                dynamic=args.dynamic, check=not args.no_check)
        logger.info("Wrote %s in %.0f s", args.output, time.perf_counter() - start)
    if args.text_encoder:
        logger.info("Exporting the text tower to %s", args.text_encoder)
        report[args.text_encoder] = export_text_tower(model, cfg, args.text_encoder, check=not args.no_check)
    if not args.no_check:
        print("largest difference between onnxruntime and PyTorch, per output:")
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
