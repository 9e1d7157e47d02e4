"""Train and evaluate the project's models (SED, EOV-Seg) with detectron2; the config picks the model.

    python train_net.py --config-file configs/convnextB_768.yaml --num-gpus 4 OUTPUT_DIR output/
    python train_net.py --config-file configs/convnextB_768.yaml --eval-only MODEL.WEIGHTS model.pth

``run.sh`` and ``eval.sh`` wrap these commands; the code is in :mod:`sed.engine`.
"""
import sys

from sed.engine import run

if __name__ == "__main__":
    sys.exit(run())
