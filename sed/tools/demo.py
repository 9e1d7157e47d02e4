"""Segment your own images (or a video) with your own class names, with any model family of
the project (the config's MODEL.META_ARCHITECTURE picks it: SED, EOV-Seg).

    python tools/demo.py --config-file configs/convnextB_768.yaml --input photos/ *.jpg \\
        --output out/ --vocabulary cat "dog, puppy" sky --opts MODEL.WEIGHTS model.pth

(also ``python -m sed.tools.demo`` or ``sed-demo``). --vocabulary takes class names (", "
inside a name separates synonyms; "person:thing" marks a thing class, "sky:stuff" or a bare name
a stuff class), a file (a JSON list of names and/or {"name", "isthing"} objects, or one class
per line with the same markers), or a benchmark name of the model family (listed below).
For each image, writes to --output: NAME_overlay.png (colours + legend of the classes
present; with the panoptic and instance tasks one colour per segment, thing instances outlined
and labelled with class and score), NAME_labels.png (class index per pixel) with
NAME_classes.json (index -> name), with --save-probabilities NAME_probs.npy (T, H, W) float32,
and with the panoptic and instance tasks the segments in COCO panoptic format:
NAME_panoptic.png (segment id = R + 256 G + 65536 B) and NAME_panoptic.json (segments with
category_id = class index, isthing, score, area, bbox). --task semantic writes a class per
pixel, --task instance the thing instances scoring at least --confidence-threshold (default
0.5), a pixel going to the highest-scoring one; each family shows the tasks listed below, the
first by default.
A video gives the same per frame and NAME_overlay.mp4 at the source frame rate. NAME is the file
name without extension, or, where inputs share it, its path below their common folder.

Before the model is built, the arguments are checked: a wrong one (a vocabulary that does not
parse, a vocabulary file or inputs that do not exist, an --output that is a file or cannot be
written) stops with one line "demo.py: error: ..." and exit status 2; an error while running
(a config, checkpoint or output that fails) with one line and status 1 (--debug adds the
traceback).
"""
import argparse
import glob
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
from tqdm import tqdm

from sed.family import families, get_family
from sed.outputs import DEFAULT_CONFIDENCE_THRESHOLD, check_task, read_image, write_outputs
from sed.predictor import Predictor, load_config, parse_vocabulary_spec
from sed.tools import cli

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
DEFAULT_FPS = 10.0  # for videos that do not state their frame rate
logger = logging.getLogger("sed.demo")


def families_epilog() -> str:
    """The tasks and benchmark vocabularies of each registered model family, for --help."""
    return "\n".join(f"{f.title} ({f.name}): tasks {', '.join(f.tasks)}; benchmark vocabularies "
                     f"{', '.join(f.benchmark_vocabularies)}" for f in families())


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, epilog=families_epilog())
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="image or video files, folders, globs")
    parser.add_argument("--output", required=True, help="output folder (created if missing)")
    parser.add_argument("--vocabulary", nargs="+", required=True)
    parser.add_argument("--batch-size", type=cli.positive_int, default=1, help="images per forward pass")
    parser.add_argument("--save-probabilities", action="store_true")
    parser.add_argument("--task", choices=sorted({t for f in families() for t in f.tasks}),
                        help="what to show and write (default: the model family's first task, see below)")
    parser.add_argument("--confidence-threshold", type=cli.probability, default=DEFAULT_CONFIDENCE_THRESHOLD,
                        help="instance task: the lowest instance score shown, from 0 to 1")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return parser


def expand_inputs(specs) -> List[Path]:
    """Files named, found in folders, or matched by globs (each once); patterns matching nothing
    are reported."""
    files, seen = [], set()
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
        else:
            found = [Path(p) for p in sorted(glob.glob(spec))]
        if not found:
            logger.warning("No input matches %s", spec)
        for path in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append(path)
    return files


def output_names(files: List[Path]) -> Dict[Path, str]:
    """A distinct output name per input: its stem, or where stems collide its path below the
    inputs' common folder with "__" for separators (extension included where still needed)."""
    stems = Counter(p.stem for p in files)
    root = Path(os.path.commonpath([str(p.resolve().parent) for p in files])) if files else Path()
    names = {}
    for path in files:
        relative = path.resolve().relative_to(root)
        names[path] = path.stem if stems[path.stem] == 1 else "__".join(relative.with_suffix("").parts)
    repeated = Counter(names.values())
    return {p: n if repeated[n] == 1 else f"{n}_{p.suffix.lstrip('.')}" for p, n in names.items()}


def frames(path: Path):
    """(index, RGB frame) of a video."""
    capture = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1
    capture.release()


def frame_rate(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps if fps > 0 else DEFAULT_FPS


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return cli.run_cli(build_parser(), segment, argv)


def segment(args: argparse.Namespace) -> int:
    """Check the arguments, then build the model and write the outputs of every input."""
    cfg = load_config(args.config_file, opts=args.opts)
    with cli.usage_errors():
        family = get_family(cfg)
        task = args.task or family.tasks[0]
        check_task(task, family)
        vocabulary = parse_vocabulary_spec(args.vocabulary, family)
    files = expand_inputs(args.input)
    if not files:
        raise cli.UsageError(f"no input files found in {args.input}")
    names = output_names(files)
    out_dir = cli.output_folder(args.output)
    predictor = Predictor(cfg)

    images = [p for p in files if p.suffix.lower() not in VIDEO_EXTENSIONS]
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    written = 0
    progress = tqdm(total=len(images), desc="Segmenting", unit="image")
    for start in range(0, len(images), args.batch_size):
        batch = []
        for path in images[start : start + args.batch_size]:
            image = read_image(path)
            if image is None:
                logger.warning("Skipping %s: not a readable image", path)
            else:
                batch.append((names[path], image))
        if batch:
            for (name, image), result in zip(batch, predictor.predict_batch([b[1] for b in batch], vocabulary)):
                write_outputs(out_dir, name, image, result, task=task, confidence_threshold=args.confidence_threshold,
                              save_probabilities=args.save_probabilities)
                written += 1
        progress.update(len(images[start : start + args.batch_size]))
    progress.close()
    for video in videos:
        writer = None
        for index, frame in tqdm(frames(video), desc=video.name, unit="frame"):
            name = f"{names[video]}_{index:06d}"
            overlay = write_outputs(out_dir, name, frame, predictor(frame, vocabulary), task=task,
                                    confidence_threshold=args.confidence_threshold,
                                    save_probabilities=args.save_probabilities).overlay
            if writer is None:
                size = overlay.shape[1::-1]
                writer = cv2.VideoWriter(str(out_dir / f"{names[video]}_overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                         frame_rate(video), size)
            # the legend's width follows the classes present; every frame of a video has one size
            writer.write(cv2.cvtColor(cv2.resize(overlay, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR))
            written += 1
        if writer is None:
            logger.warning("Skipping %s: no readable frames", video)
        else:
            writer.release()
    logger.info("Wrote %d result(s) to %s", written, out_dir)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
