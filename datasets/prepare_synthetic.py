"""Generate the embedded default datasets (coloured shapes: semantic for SED, panoptic for
EOV-Seg) under $DETECTRON2_DATASETS.

    python datasets/prepare_synthetic.py [--size 128] [--seed 0]
"""
import argparse

from sed.data.datasets import dataset_root
from sed.data.synthetic import generate, generate_panoptic

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=dataset_root(), help="datasets folder (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"Synthetic dataset written to {generate(args.root, size=args.size, seed=args.seed)}")
    print(f"Synthetic panoptic dataset written to {generate_panoptic(args.root, size=args.size, seed=args.seed)}")
