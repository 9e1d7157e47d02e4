"""Segment your own images (or a video) with your own class names.

    python tools/demo.py --config-file configs/convnextB_768.yaml --input photos/ *.jpg \\
        --output out/ --vocabulary cat "dog, puppy" sky --opts MODEL.WEIGHTS model.pth

--vocabulary takes class names (", " inside a name separates synonyms), a file (a JSON list or
one class per line), or a benchmark name (ade150, ade847, pc59, pc459, voc20, coco).
For each image, writes to --output: NAME_overlay.png (colours + legend of the classes
present), NAME_labels.png (class index per pixel) with NAME_classes.json (index -> name),
and with --save-probabilities NAME_probs.npy (T, H, W) float32. A video gives the same per frame
and NAME_overlay.mp4.
"""
import argparse
import glob
import json
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from sed import SEDPredictor, resolve_vocabulary
from sed.visualization import overlay_with_legend

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
logger = logging.getLogger("sed.demo")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="image or video files, folders, globs")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--vocabulary", nargs="+", required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--save-probabilities", action="store_true")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def expand_inputs(specs):
    """Files named, found in folders, or matched by globs; patterns matching nothing are reported."""
    files = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
        else:
            found = [Path(p) for p in sorted(glob.glob(spec))]
        if not found:
            logger.warning("No input matches %s", spec)
        files.extend(found)
    return files


def read_image(path: Path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def frames(path: Path):
    capture = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        yield f"{path.stem}_{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1
    capture.release()


def write_outputs(out_dir: Path, name: str, image, result, save_probabilities: bool):
    overlay = overlay_with_legend(image, result.labels, result.class_names)
    cv2.imwrite(str(out_dir / f"{name}_overlay.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    dtype = np.uint8 if len(result.class_names) <= 256 else np.uint16
    cv2.imwrite(str(out_dir / f"{name}_labels.png"), result.labels.astype(dtype))
    table = {str(i): n for i, n in enumerate(result.class_names)}
    (out_dir / f"{name}_classes.json").write_text(json.dumps(table, indent=1, ensure_ascii=False))
    if save_probabilities:
        np.save(out_dir / f"{name}_probs.npy", result.probabilities.numpy())
    return overlay


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        vocabulary = resolve_vocabulary(args.vocabulary)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = expand_inputs(args.input)
    if not files:
        print(f"error: no input files found in {args.input}", file=sys.stderr)
        return 2
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = SEDPredictor.from_config_file(args.config_file, opts=args.opts)

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
                batch.append((path.stem, image))
        if batch:
            for (name, image), result in zip(batch, predictor.predict_batch([b[1] for b in batch], vocabulary)):
                write_outputs(out_dir, name, image, result, args.save_probabilities)
                written += 1
        progress.update(len(images[start : start + args.batch_size]))
    progress.close()
    for video in videos:
        writer = None
        for name, frame in tqdm(frames(video), desc=video.name, unit="frame"):
            overlay = write_outputs(out_dir, name, frame, predictor(frame, vocabulary), args.save_probabilities)
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(str(out_dir / f"{video.stem}_overlay.mp4"), fourcc, 10.0, overlay.shape[1::-1])
            writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            written += 1
        if writer is None:
            logger.warning("Skipping %s: no readable frames", video)
        else:
            writer.release()
    print(f"Wrote {written} result(s) to {out_dir}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
