"""Generate the embedded default datasets (coloured shapes: semantic for SED, panoptic for
EOV-Seg) under $DETECTRON2_DATASETS; with --custom DIR, write instead the same kind of data as
custom dataset folders DIR/shapes and DIR/shapes_panoptic, with a vocabulary of their own
(docs/custom_datasets.md).

    python datasets/prepare_synthetic.py [--size 128] [--seed 0] [--custom DIR]
"""
import argparse

from sed.data.custom_example import write_examples
from sed.data.datasets import dataset_root
from sed.data.synthetic import generate, generate_panoptic

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=dataset_root(), help="datasets folder (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--custom", metavar="DIR", help="write the custom-format example folders under DIR")
    args = parser.parse_args()
    if args.custom:
        for folder in write_examples(args.custom, size=args.size, seed=args.seed):
            print(f"Custom dataset folder written to {folder}")
    else:
        print(f"Synthetic dataset written to {generate(args.root, size=args.size, seed=args.seed)}")
        print(f"Synthetic panoptic dataset written to {generate_panoptic(args.root, size=args.size, seed=args.seed)}")
