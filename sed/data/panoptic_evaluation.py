"""Panoptic quality and mask AP for datasets registered in detectron2's COCO-panoptic style.

PQ: detectron2's ``COCOPanopticEvaluator`` turns each prediction into the COCO panoptic format;
COCO's reference code (``panopticapi.evaluation``, packaged as ``panopticapi-lite``) matches and
averages, with the functions its ``pq_compute`` runs (``pq_compute_multi_core``,
``PQStat.pq_average``), so that the per-category counts are at hand. Mask AP: pycocotools through
detectron2's ``COCOEvaluator``. Both gather the predictions of all processes and score them on
the main one, so several processes give the numbers of one.
"""
import contextlib
import io
import itertools
import json
import logging
import math
import os
import tempfile
from collections import OrderedDict

from detectron2.data import Metadata
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator
from detectron2.evaluation.panoptic_evaluation import _print_panoptic_results
from detectron2.utils import comm
from panopticapi.evaluation import pq_compute_multi_core
from tabulate import tabulate

logger = logging.getLogger(__name__)

# pq_compute's groups and detectron2's key suffixes for them.
GROUPS = (("All", None, ""), ("Things", True, "_th"), ("Stuff", False, "_st"))
METRICS = ("PQ", "SQ", "RQ")


class PanopticEvaluator(COCOPanopticEvaluator):
    """PQ, SQ, RQ over all categories, things and stuff (detectron2's ``panoptic_seg`` keys, x100)
    and per category (``PQ-<name>``, ``SQ-<name>``, ``RQ-<name>``, GT-JSON names), as COCO's
    reference ``pq_compute`` computes them on the split's ``panoptic_json`` / ``panoptic_root``.

    Takes the model output ``{"panoptic_seg": (id map (H, W), segments_info)}`` with contiguous
    ``category_id`` and ``isthing`` per segment (detectron2 maps them back to dataset ids),
    without modifying it. Deviations from ``pq_compute``, only where it has no answer: a category
    that occurs nowhere (TP + FP + FN = 0) has NaN per-category values (the reference lists 0),
    and a group (Things or Stuff) without such categories has NaN means (the reference divides by
    zero). With ``output_dir`` the predictions are kept in the reference layout
    (``panoptic_predictions/*.png`` and ``panoptic_predictions.json``).
    """

    # What ``process`` accumulates (saved and resumed by ResumableEvaluator): per image, its
    # PNG and segments.
    RESUMABLE_STATE = ("_predictions",)

    def _convert_category_id(self, segment_info):
        """A copy of the segment with plain ``int`` ids and its dataset category id."""
        segment = dict(segment_info, id=int(segment_info["id"]),
                       category_id=int(segment_info["category_id"]))
        if segment.get("isthing") is not None:
            # detectron2 takes the thing map only for ``isthing is True``.
            segment["isthing"] = bool(segment["isthing"])
        return super()._convert_category_id(segment)

    def evaluate(self):
        """Scores the predictions of all processes on the main one (others return None)."""
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None
        with open(self._metadata.panoptic_json) as f:
            gt_json = json.load(f)
        by_image = {p["image_id"]: p for p in predictions}
        missing = [a["image_id"] for a in gt_json["annotations"] if a["image_id"] not in by_image]
        if missing:
            raise ValueError(f"No panoptic prediction for {len(missing)} image(s) of "
                             f"{self._metadata.panoptic_json}, e.g. image_id {missing[0]!r}")
        with contextlib.ExitStack() as stack:
            if self._output_dir:
                pred_dir = os.path.join(self._output_dir, "panoptic_predictions")
                os.makedirs(pred_dir, exist_ok=True)
            else:
                pred_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="panoptic_eval"))
            for p in predictions:
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p.pop("png_string"))
            if self._output_dir:
                with open(os.path.join(self._output_dir, "panoptic_predictions.json"), "w") as f:
                    json.dump(dict(gt_json, annotations=predictions), f)
            pairs = [(a, by_image[a["image_id"]]) for a in gt_json["annotations"]]
            categories = {c["id"]: c for c in gt_json["categories"]}
            with contextlib.redirect_stdout(io.StringIO()):
                stat = pq_compute_multi_core(pairs, self._metadata.panoptic_root, pred_dir,
                                             categories)
        return OrderedDict(panoptic_seg=self._results(stat, categories))

    @staticmethod
    def _results(stat, categories):
        """detectron2's result dict from panopticapi's accumulated ``PQStat``; logs the tables."""
        def seen(cat_id):
            return stat[cat_id].tp + stat[cat_id].fp + stat[cat_id].fn > 0

        summary, results = {}, {}
        for group, isthing, suffix in GROUPS:
            members = [c for c, info in categories.items()
                       if isthing is None or (info["isthing"] == 1) == isthing]
            summary[group] = (stat.pq_average(categories, isthing=isthing)[0]
                              if any(map(seen, members))
                              else dict(pq=math.nan, sq=math.nan, rq=math.nan, n=0))
            results.update({k + suffix: 100 * summary[group][k.lower()] for k in METRICS})
        per_class = stat.pq_average(categories, isthing=None)[1] if any(map(seen, categories)) else {}
        rows = []
        for cat_id, info in categories.items():
            values = [100 * per_class[cat_id][k.lower()] if seen(cat_id) else math.nan
                      for k in METRICS]
            results.update({f"{k}-{info['name']}": v for k, v in zip(METRICS, values)})
            if seen(cat_id):
                counts = stat[cat_id]
                rows.append([info["name"], "thing" if info["isthing"] == 1 else "stuff", *values,
                             counts.tp, counts.fp, counts.fn])
        _print_panoptic_results(summary)
        logger.info("Per-category panoptic quality:\n" + tabulate(
            rows, headers=["category", "kind", *METRICS, "TP", "FP", "FN"],
            tablefmt="pipe", floatfmt=".3f"))
        return results


class InstanceSegEvaluator(COCOEvaluator):
    """Mask AP (``segm``: AP, AP50, AP75, APs, APm, APl, ``AP-<name>``) of the model's
    ``instances`` against the split's COCO instance JSON (metadata ``json_file``), with
    pycocotools (``use_fast_impl=False``: detectron2's fast variant needs its compiled ops).

    Predicted classes are contiguous ids, mapped back through ``thing_dataset_id_to_contiguous_id``.
    Unlike detectron2's ``COCOEvaluator``, the thing ids need not be 0..N-1: ADE20K's thing
    classes keep their indices among the 150 classes. Per-category names are the JSON's.
    """

    # What ``process`` accumulates (saved and resumed by ResumableEvaluator): per image, its
    # instances as COCO JSON.
    RESUMABLE_STATE = ("_predictions",)

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir=None):
        super().__init__(dataset_name, tasks=("segm",), distributed=distributed,
                         output_dir=output_dir, use_fast_impl=False)
        self._dataset_id = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
        # Without a thing map, COCOEvaluator takes the category ids of the predictions as they
        # are (``process`` has mapped them) and names the JSON's categories in COCOeval's order.
        names = [c["name"] for c in self._coco_api.loadCats(sorted(self._coco_api.getCatIds()))]
        self._metadata = Metadata(name=dataset_name, thing_classes=names)

    def process(self, inputs, outputs):
        start = len(self._predictions)
        super().process(inputs, outputs)
        for prediction in self._predictions[start:]:
            for instance in prediction.get("instances", []):
                if instance["category_id"] not in self._dataset_id:
                    raise ValueError(f"Predicted class {instance['category_id']} is not a thing "
                                     f"class of {self._metadata.name}")
                instance["category_id"] = self._dataset_id[instance["category_id"]]
