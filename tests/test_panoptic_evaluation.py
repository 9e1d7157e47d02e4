"""Panoptic quality and mask AP on crafted COCO-panoptic data with hand-computed answers, against
an independent PQ computation on random data, and with two processes against one."""
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets import register_coco_panoptic
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.structures import Boxes, Instances
from panopticapi.evaluation import pq_compute
from PIL import Image

from helpers import pq_summary, straightforward_pq
from sed.data.panoptic_evaluation import InstanceSegEvaluator, PanopticEvaluator
from sed.launch import launch

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "car", "isthing": 1, "color": [0, 0, 142]},
    {"id": 3, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
    {"id": 4, "name": "grass", "isthing": 0, "color": [107, 142, 35]},
]
THINGS, STUFF = {1: 0, 2: 1}, {3: 2, 4: 3}  # dataset id -> contiguous id (detectron2's maps)
PERSON, CAR, SKY, GRASS = 1, 2, 3, 4
H, W = 10, 20


def register(root, name, gt_maps, gt_segments):
    """Writes ``gt_maps`` (segment-id arrays, 0 = VOID) with their segments (id, dataset
    category, iscrowd) in the COCO panoptic layout and registers them as detectron2 does COCO's."""
    pan_dir, img_dir = root / name / "panoptic", root / name / "images"
    pan_dir.mkdir(parents=True)
    img_dir.mkdir()
    images, annotations = [], []
    for i, (ids, segments) in enumerate(zip(gt_maps, gt_segments)):
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(pan_dir / f"{i:04d}.png")
        (img_dir / f"{i:04d}.jpg").touch()
        images.append({"id": i, "file_name": f"{i:04d}.jpg", "height": ids.shape[0], "width": ids.shape[1]})
        infos = []
        for seg_id, category, crowd in segments:
            ys, xs = np.nonzero(ids == seg_id)
            infos.append({"id": seg_id, "category_id": category, "iscrowd": crowd, "area": len(ys),
                          "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]})
        annotations.append({"image_id": i, "file_name": f"{i:04d}.png", "segments_info": infos})
    gt_json = root / name / "panoptic.json"
    gt_json.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    register_coco_panoptic(name, {"thing_dataset_id_to_contiguous_id": THINGS,
                                  "stuff_dataset_id_to_contiguous_id": STUFF},
                           str(img_dir), str(pan_dir), str(gt_json))


def model_output(ids, segments):
    """The model's ``panoptic_seg`` for an id map and its segments (id, dataset category)."""
    info = [{"id": s, "category_id": {**THINGS, **STUFF}[c], "isthing": c in THINGS} for s, c in segments]
    return {"panoptic_seg": (torch.as_tensor(ids, dtype=torch.int32), info)}


def evaluate(tmp_path, name, gt_maps, gt_segments, pred_maps, pred_segments, output_dir=None):
    register(tmp_path, name, gt_maps, gt_segments)
    evaluator = PanopticEvaluator(name, output_dir=output_dir)
    evaluator.reset()
    for d, ids, segments in zip(DatasetCatalog.get(name), pred_maps, pred_segments):
        evaluator.process([d], [model_output(ids, segments)])
    return evaluator.evaluate()["panoptic_seg"]


def check(result, expected):
    """``expected``: {key: fraction or NaN}; the evaluator reports percentages."""
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(result[key]), key
        else:
            assert result[key] == pytest.approx(100 * value), key


def test_perfect_prediction(tmp_path):
    gt = np.zeros((H, W), np.int64)
    gt[:5], gt[5:, :8], gt[5:, 8:12], gt[5:, 15:] = 70000, 3, 900, 5  # sky, person, car, grass; VOID
    segments = [(70000, SKY, 0), (3, PERSON, 0), (900, CAR, 0), (5, GRASS, 0)]
    pred = np.select([gt == 70000, gt == 3, gt == 900, gt == 5], [1, 2, 3, 4], 0)  # other ids
    pred_segments = [(1, SKY), (2, PERSON), (3, CAR), (4, GRASS)]
    output = model_output(pred, pred_segments)
    for info in output["panoptic_seg"][1]:  # ids and flags as tensors / NumPy values
        info.update(id=torch.tensor(info["id"]), isthing=np.bool_(info["isthing"]))
    register(tmp_path, "pq_perfect", [gt], [segments])
    evaluator = PanopticEvaluator("pq_perfect")
    evaluator.reset()
    evaluator.process(DatasetCatalog.get("pq_perfect"), [output])
    result = evaluator.evaluate()["panoptic_seg"]
    assert isinstance(output["panoptic_seg"][1][0]["isthing"], np.bool_)  # model output untouched
    for suffix in ("", "_th", "_st"):
        check(result, pq_summary(1, 1, 1, suffix))
    check(result, {f"{k}-{c['name']}": 1 for k in ("PQ", "SQ", "RQ") for c in CATEGORIES})


def test_crowd(tmp_path):
    gt = np.zeros((H, W), np.int64)
    gt[:5], gt[5:, :4], gt[5:, 10:16] = 1, 2, 3  # sky; a person; a person crowd (30 px); VOID
    pred = np.zeros((H, W), np.int64)
    pred[:5], pred[5:, :4], pred[5:, 10:13], pred[5:, 13:16] = 1, 2, 3, 4
    result = evaluate(tmp_path, "pq_crowd", [gt], [[(1, SKY, 0), (2, PERSON, 0), (3, PERSON, 1)]],
                      [pred], [[(1, SKY), (2, PERSON), (3, PERSON), (4, CAR)]])
    # The person on the person crowd is ignored, the car on it is a false positive; the crowd is
    # no false negative. person 1/1/1, car FP only 0/0/0, sky 1/1/1, grass absent.
    check(result, pq_summary(2 / 3, 2 / 3, 2 / 3) | pq_summary(0.5, 0.5, 0.5, "_th") | pq_summary(1, 1, 1, "_st"))
    check(result, {"PQ-person": 1, "PQ-car": 0, "RQ-car": 0, "PQ-sky": 1, "PQ-grass": math.nan})


def test_void(tmp_path):
    gt = np.zeros((H, W), np.int64)
    gt[5:], gt[:5, :10] = 1, 2  # grass (100 px), a person (50 px); VOID top right
    pred = np.zeros((H, W), np.int64)
    pred[5:], pred[:5, 10:15] = 1, 1  # grass, and 25 px of VOID
    pred[:6, 15:] = 3  # car: 25 px on VOID, 5 on grass -> ignored
    pred[:5, :6] = 2  # 30 px of the person; the rest of it predicted VOID
    result = evaluate(tmp_path, "pq_void", [gt], [[(1, GRASS, 0), (2, PERSON, 0)]],
                      [pred], [[(1, GRASS), (2, PERSON), (3, CAR)]])
    # grass: area 120, 95 on grass, 25 on VOID: IoU 95 / (120 + 100 - 95 - 25) = 0.95.
    # person: IoU 30 / 50 (predicted VOID inside the person stays in the union).
    check(result, pq_summary(0.775, 0.775, 1) | pq_summary(0.6, 0.6, 1, "_th") | pq_summary(0.95, 0.95, 1, "_st"))
    check(result, {"PQ-car": math.nan, "SQ-person": 0.6})


def test_stuff_split_into_segments(tmp_path):
    gt = np.zeros((H, W), np.int64)
    gt[:5], gt[5:] = 1, 2
    pred = np.zeros((H, W), np.int64)
    pred[:5, :12], pred[:5, 12:], pred[5:] = 1, 2, 3  # sky as 60 + 40 px segments
    result = evaluate(tmp_path, "pq_split", [gt], [[(1, SKY, 0), (2, GRASS, 0)]],
                      [pred], [[(1, SKY), (2, SKY), (3, GRASS)]])
    # sky: TP (IoU 0.6) + FP: PQ 0.6 / 1.5, SQ 0.6, RQ 1 / 1.5. No thing category occurs.
    check(result, {"PQ-sky": 0.4, "SQ-sky": 0.6, "RQ-sky": 2 / 3, "PQ-grass": 1})
    check(result, pq_summary(0.7, 0.8, 5 / 6) | pq_summary(0.7, 0.8, 5 / 6, "_st"))
    check(result, pq_summary(math.nan, math.nan, math.nan, "_th"))


def test_unmatched_and_iou_threshold(tmp_path):
    gt = np.zeros((H, W), np.int64)
    gt[:5, :10], gt[:5, 10:], gt[5:, :10], gt[5:, 10:] = 1, 2, 3, 4  # 2 persons, car, grass
    pred = np.zeros((H, W), np.int64)
    pred[:5, :5] = 1  # half of person 1: IoU exactly 0.5 -> FP + FN
    pred[:5, 10:15], pred[0, 15] = 2, 2  # 26 px of person 2: IoU 0.52 -> TP
    pred[5:, :10], pred[5:, 10:] = 3, 4  # sky over the car: FP sky, FN car
    result = evaluate(tmp_path, "pq_unmatched", [gt],
                      [[(1, PERSON, 0), (2, PERSON, 0), (3, CAR, 0), (4, GRASS, 0)]],
                      [pred], [[(1, PERSON), (2, PERSON), (3, SKY), (4, GRASS)]])
    # person: TP 1 (IoU 0.52), FP 1, FN 1 -> PQ 0.26, SQ 0.52, RQ 0.5; car FN, sky FP: 0.
    check(result, {"PQ-person": 0.26, "SQ-person": 0.52, "RQ-person": 0.5, "PQ-car": 0, "PQ-sky": 0})
    check(result, pq_summary(0.315, 0.38, 0.375) | pq_summary(0.13, 0.26, 0.25, "_th")
          | pq_summary(0.5, 0.5, 0.5, "_st"))


def test_every_image_needs_a_prediction(tmp_path):
    gt = np.ones((H, W), np.int64)
    register(tmp_path, "pq_missing", [gt, gt], [[(1, SKY, 0)], [(1, SKY, 0)]])
    evaluator = PanopticEvaluator("pq_missing")
    evaluator.reset()
    evaluator.process(DatasetCatalog.get("pq_missing")[:1], [model_output(gt, [(1, SKY)])])
    with pytest.raises(ValueError, match="No panoptic prediction for 1 image.*image_id 1"):
        evaluator.evaluate()


def draw(rng, boxes, stuff_rows, h, w):
    """An id map from stuff bands and boxes painted in order (category 0: VOID), and its
    non-empty segments."""
    ids = np.zeros((h, w), np.int64)
    labels = [c for c, _ in stuff_rows] + [c for c, *_ in boxes]
    seg_ids = rng.choice(np.arange(1, 1 << 24), size=len(labels), replace=False)
    for seg_id, (_, (top, bottom, left, right)) in zip(seg_ids, stuff_rows):
        ids[top:bottom, left:right] = seg_id
    for seg_id, (category, y0, y1, x0, x1, _) in zip(seg_ids[len(stuff_rows):], boxes):
        ids[max(y0, 0):y1, max(x0, 0):x1] = seg_id if category else 0
    crowds = [0] * len(stuff_rows) + [b[-1] for b in boxes]
    segments = [(int(s), int(c), int(k)) for s, c, k in zip(seg_ids, labels, crowds) if (ids == s).any()]
    return ids, segments


def random_box(rng, h, w, category, crowd=0):
    y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
    return (category, y0, y0 + rng.integers(4, 10), x0, x0 + rng.integers(5, 14), crowd)


def random_case(seed, n_images=6, h=24, w=32):
    """GT with two stuff bands, thing boxes (some crowd, one crowd per category at most) and VOID
    boxes; predictions from jittered, dropped, relabelled, split and extra segments."""
    rng = np.random.default_rng(seed)
    gt_maps, gt_segments, pred_maps, pred_segments = [], [], [], []
    for _ in range(n_images):
        top, bottom = rng.permutation([SKY, GRASS])
        split = int(rng.integers(6, h - 6))
        crowd_used, boxes = set(), []
        for _ in range(rng.integers(3, 7)):
            category = int(rng.choice([PERSON, CAR]))
            crowd = int(category not in crowd_used and rng.random() < 0.3)
            crowd_used |= {category} if crowd else set()
            boxes.append(random_box(rng, h, w, category, crowd))
        voids = [random_box(rng, h, w, 0) for _ in range(rng.integers(1, 3))]
        ids, segments = draw(rng, boxes + voids, [(top, (0, split, 0, w)), (bottom, (split, h, 0, w))], h, w)
        gt_maps.append(ids)
        gt_segments.append(segments)

        cut, col = split + int(rng.integers(-2, 3)), int(rng.integers(4, w - 4))
        bands = [(top, (0, cut, 0, col)), (top if rng.random() < 0.5 else bottom, (0, cut, col, w)),
                 (bottom, (cut, h, 0, w))]
        pred_boxes = []
        for category, y0, y1, x0, x1, _ in boxes:
            if rng.random() < 0.15:
                continue
            if rng.random() < 0.15:
                category = PERSON + CAR - category
            dy, dx = rng.integers(-2, 3, size=2)
            pred_boxes.append((category, y0 + dy, y1 + dy, x0 + dx, x1 + dx, 0))
        pred_boxes += [random_box(rng, h, w, int(rng.choice([PERSON, CAR, SKY, GRASS])))
                       for _ in range(rng.integers(0, 3))]
        pred_boxes += [random_box(rng, h, w, 0)] if rng.random() < 0.5 else []
        ids, segments = draw(rng, pred_boxes, bands, h, w)
        pred_maps.append(ids)
        pred_segments.append([(s, c) for s, c, _ in segments])
    return gt_maps, gt_segments, pred_maps, pred_segments


def test_random_case_matches_straightforward_computation(tmp_path):
    case = random_case(seed=2)  # 8 crowd regions; 10 predictions mostly on VOID or crowd
    expected = straightforward_pq(*case, categories=CATEGORIES)
    assert 0 < expected["PQ_th"] < 1 and 0 < expected["PQ_st"] < 1
    result = evaluate(tmp_path, "pq_random", *case, output_dir=str(tmp_path / "out"))
    check(result, expected)
    # The saved predictions give the same numbers with the reference's own entry point.
    gt, out = tmp_path / "pq_random", tmp_path / "out"
    reference = pq_compute(str(gt / "panoptic.json"), str(out / "panoptic_predictions.json"),
                           str(gt / "panoptic"), str(out / "panoptic_predictions"))
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        assert result["PQ" + suffix] == pytest.approx(100 * reference[group]["pq"])


def inference(root, name, seed, result_file):
    """detectron2's inference loop with a model that returns the random case's predictions;
    the main process writes the results."""
    from detectron2.utils import comm

    if name not in DatasetCatalog.list():
        register_coco_panoptic(name, {"thing_dataset_id_to_contiguous_id": THINGS,
                                      "stuff_dataset_id_to_contiguous_id": STUFF}, f"{root}/{name}/images",
                               f"{root}/{name}/panoptic", f"{root}/{name}/panoptic.json")
    _, _, pred_maps, pred_segments = random_case(seed)
    outputs = [model_output(ids, segments) for ids, segments in zip(pred_maps, pred_segments)]
    loader = build_detection_test_loader(DatasetCatalog.get(name), mapper=lambda d: d)
    results = inference_on_dataset(lambda inputs: [outputs[d["image_id"]] for d in inputs], loader,
                                   PanopticEvaluator(name))
    if comm.is_main_process():
        with open(result_file, "w") as f:
            json.dump({"world_size": comm.get_world_size(), "results": results}, f, sort_keys=True)
    else:
        assert results == {}


def test_two_processes_give_the_numbers_of_one(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CPU processes (gloo) on any machine
    register(tmp_path, "pq_processes", *random_case(seed=3)[:2])
    inference(tmp_path, "pq_processes", 3, tmp_path / "one.json")
    launch(inference, 2, dist_url="auto", args=(tmp_path, "pq_processes", 3, tmp_path / "two.json"))
    one, two = ((tmp_path / f).read_text() for f in ("one.json", "two.json"))
    assert one.replace('"world_size": 1', '"world_size": 2') == two
    assert json.loads(one)["results"]["panoptic_seg"]["PQ"] > 0


def rle(mask):
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(encoded, counts=encoded["counts"].decode())


@pytest.mark.parametrize("thing_map", [{7: 7, 10: 10}, {7: 0, 10: 1}], ids=["ade20k_style", "coco_style"])
def test_mask_ap(tmp_path, thing_map):
    """Two beds (one found) and a cabinet (found): AP_bed = 51/101 (precision 1 up to recall 0.5
    of COCO's 101 recall points), AP_cabinet = 1. Image ids are strings, as ADE20K's."""
    masks = [np.zeros((H, W), bool) for _ in range(3)]
    masks[0][:4, :4], masks[1][5:, 10:], masks[2][:3, 12:18] = True, True, True
    categories = [7, 7, 10]
    annotations = [{"id": i + 1, "image_id": "ADE_val_1", "category_id": c, "segmentation": rle(m),
                    "area": int(m.sum()), "bbox": mask_util.toBbox(rle(m)).tolist(), "iscrowd": 0}
                   for i, (c, m) in enumerate(zip(categories, masks))]
    instances_json = tmp_path / "instances.json"
    instances_json.write_text(json.dumps({
        "images": [{"id": "ADE_val_1", "file_name": "ADE_val_1.jpg", "height": H, "width": W}],
        "annotations": annotations, "categories": [{"id": 7, "name": "bed"}, {"id": 10, "name": "cabinet"}]}))
    name = "ap_" + "_".join(map(str, thing_map.values()))
    MetadataCatalog.get(name).set(json_file=str(instances_json), thing_dataset_id_to_contiguous_id=thing_map)
    instances = Instances((H, W), pred_masks=torch.as_tensor(np.stack([masks[0], masks[2]])),
                          pred_boxes=Boxes(torch.zeros(2, 4)), scores=torch.tensor([0.9, 0.8]),
                          pred_classes=torch.tensor([thing_map[7], thing_map[10]]))
    evaluator = InstanceSegEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process([{"image_id": "ADE_val_1"}], [{"instances": instances}])
    result = evaluator.evaluate()["segm"]
    assert result["AP-bed"] == pytest.approx(100 * 51 / 101) and result["AP-cabinet"] == pytest.approx(100)
    assert result["AP"] == pytest.approx(100 * (51 / 101 + 1) / 2) == result["AP50"] == result["AP75"]
    assert set(result) >= {"APs", "APm", "APl"}
    # detectron2's own evaluator accepts only contiguous 0..N-1 thing ids.
    plain = COCOEvaluator(name, tasks=("segm",), distributed=False, use_fast_impl=False)
    plain.reset()
    plain.process([{"image_id": "ADE_val_1"}], [{"instances": instances}])
    if min(thing_map.values()) == 0:
        assert plain.evaluate()["segm"]["AP"] == pytest.approx(result["AP"])
    else:
        with pytest.raises(AssertionError):
            plain.evaluate()
    with pytest.raises(ValueError, match="not a thing class"):
        evaluator.process([{"image_id": "ADE_val_1"}], [{"instances": Instances(
            (H, W), pred_masks=torch.zeros(1, H, W, dtype=torch.bool), pred_boxes=Boxes(torch.zeros(1, 4)),
            scores=torch.ones(1), pred_classes=torch.tensor([99]))}])
