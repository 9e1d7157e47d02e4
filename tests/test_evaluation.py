"""The evaluator against hand-computed metrics (ignore pixels, absent classes, PAS-20b)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from sed.data.evaluation import SEDSemSegEvaluator

GT = [np.array([[0, 0, 1], [1, 255, 2]]), np.array([[1, 1], [0, 0]])]
PRED = [np.array([[0, 1, 1], [1, 0, 0]]), np.array([[1, 3], [0, 0]])]


def evaluate(tmp_path, name, classes, preds, num_scores, background_from=-1):
    dicts = []
    for i, gt in enumerate(GT):
        path = tmp_path / f"{name}_{i}.png"
        Image.fromarray(gt.astype(np.uint8)).save(path)
        dicts.append({"file_name": f"{name}_{i}.jpg", "sem_seg_file_name": str(path)})
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=classes, ignore_label=255, background_from=background_from,
                                  evaluator_type="sem_seg")
    evaluator = SEDSemSegEvaluator(name, distributed=False)
    evaluator.reset()
    for d, pred in zip(dicts, preds):
        scores = F.one_hot(torch.as_tensor(pred), num_scores).permute(2, 0, 1).float()
        evaluator.process([d], [{"sem_seg": scores}])
    return evaluator.evaluate()["sem_seg"]


def test_metrics_by_hand(tmp_path):
    m = evaluate(tmp_path, "hand_metrics", ["a", "b", "c", "d"], PRED, 4)
    # gt pixels 4/4/1/0, predicted 4/4/0/1, true positives 3/3/0/0; class d never in the ground truth.
    assert m["IoU-a"] == pytest.approx(60.0) and m["IoU-b"] == pytest.approx(60.0) and m["IoU-c"] == 0.0
    assert np.isnan(m["IoU-d"]) and np.isnan(m["ACC-d"])
    assert m["mIoU"] == pytest.approx(40.0)
    assert m["mACC"] == pytest.approx(50.0)
    assert m["pACC"] == pytest.approx(100 * 6 / 9)
    assert m["fwIoU"] == pytest.approx(100 * (4 * 0.6 + 4 * 0.6) / 9)


def test_background_rule(tmp_path):
    preds = [np.array([[0, 1, 1], [1, 0, 3]]), np.array([[1, 2], [0, 0]])]
    m = evaluate(tmp_path, "hand_background", ["a", "b", "background"], preds, 4, background_from=2)
    # Index 3 counts as background (2): the last pixel of image 1 becomes a true positive, and
    # image 2's prediction 2 a false positive for background.
    assert m["IoU-background"] == pytest.approx(50.0)
    assert m["IoU-a"] == pytest.approx(100 * 3 / 4) and m["IoU-b"] == pytest.approx(60.0)
