"""The vocabulary syntax, the predictor with EOV-Seg, the panoptic demo outputs and the demo's
robustness (duplicate names, image formats, unreadable files, video frame rate)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import ROOT
from detectron2.structures import Instances

from sed import Panoptic, PanopticSegment, SEDPredictor, parse_vocabulary_spec, resolve_vocabulary
from sed.family import get_family
from sed.outputs import check_task, class_regions, instance_segments, write_panoptic
from sed.predictor import Segmentation
from sed.resources import vocabulary_path
from sed.tools.demo import expand_inputs, output_names
from sed.visualization import class_colours, highlight_segment, panoptic_overlay
from sed.vocabulary import Vocabulary

EOV_TINY = str(ROOT / "configs" / "eov_seg" / "synthetic_tiny.yaml")
NO_CACHE = ["MODEL.EOV_SEG.TEXT_CACHE_DIR", ""]


def test_command_line_entries_mark_things_and_default_to_stuff():
    vocabulary = parse_vocabulary_spec(["person:thing", "car, automobile:thing", "sky", "road:stuff"], "SED")
    assert vocabulary == Vocabulary(("person", "car, automobile", "sky", "road"), (True, True, False, False))


def test_vocabulary_files(tmp_path):
    lines = tmp_path / "classes.txt"
    lines.write_text("dog, puppy:thing\n\ngrass\n")
    assert parse_vocabulary_spec(str(lines), "SED") == Vocabulary(("dog, puppy", "grass"), (True, False))
    objects = tmp_path / "classes.json"
    objects.write_text(json.dumps([{"name": "cat,cats", "isthing": True}, "sky"]))
    assert parse_vocabulary_spec(str(objects), "EOV_SEG") == Vocabulary(("cat,cats", "sky"), (True, False))


def test_benchmark_names_resolve_to_the_model_familys_vocabulary():
    coco = parse_vocabulary_spec("coco_panoptic", "EOV_SEG")
    assert len(coco) == 133 and sum(coco.isthing) == 80 and coco.names[0].startswith("person")
    ade = parse_vocabulary_spec("ade150", "EOV_SEG")
    assert len(ade) == 150 and sum(ade.isthing) == 100 and ade.names[0].startswith("wall,walls")
    assert resolve_vocabulary("ade150", "SED")[0] == json.loads(vocabulary_path("ade150.json").read_text())[0]
    with pytest.raises(ValueError, match="'coco_panoptic' is a benchmark vocabulary of EOV-Seg; with SED use one of ade150"):
        parse_vocabulary_spec("coco_panoptic", "SED")


def test_a_server_reads_no_file_named_in_a_vocabulary(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    assert parse_vocabulary_spec([str(classes)], "SED", files=False) == Vocabulary((str(classes),), (False,))
    assert len(parse_vocabulary_spec(["ade150"], "SED", files=False)) == 150
    with pytest.raises(ValueError, match="with SED use one of ade150, .*, coco or class names$"):
        parse_vocabulary_spec(["coco_panoptic"], "SED", files=False)


@pytest.mark.parametrize("entries, message", [
    (["person:animal"], "unknown marker"),
    ([":thing"], "empty class name"),
    (["", " "], "vocabulary is empty"),
])
def test_malformed_entries_are_refused(entries, message):
    with pytest.raises(ValueError, match=message):
        parse_vocabulary_spec(entries, "EOV_SEG")


def test_malformed_files_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('["cat", ')
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_vocabulary_spec(str(bad), "EOV_SEG")
    bad.write_text('["cat", {"isthing": true}]')
    with pytest.raises(ValueError, match="entry 1"):
        parse_vocabulary_spec(str(bad), "EOV_SEG")


def crafted_panoptic():
    """Two thing instances of class 0 and one stuff segment of class 2 on a 40 x 60 image."""
    ids = np.zeros((40, 60), np.int32)
    ids[:, 30:] = 3
    ids[5:15, 5:15] = 1
    ids[20:35, 10:25] = 2
    segments = [PanopticSegment(1, 0, True, 0.9, 100), PanopticSegment(2, 0, True, 0.75, 225),
                PanopticSegment(3, 2, False, 0.5, 1200)]
    return ids, Panoptic(ids, segments)


def test_panoptic_overlay_colours_segments_outlines_things_and_lists_classes():
    ids, panoptic = crafted_panoptic()
    image = np.full((40, 60, 3), 128, np.uint8)
    overlay = panoptic_overlay(image, panoptic, ["cat", "dog", "sky"])
    assert overlay.shape[0] == 40 and overlay.shape[1] > 60
    picture, legend = overlay[:, :60], overlay[:, 60:]
    assert not np.array_equal(picture[10, 10], picture[27, 17])  # two cats, two colours
    assert np.array_equal(picture[2, 2], image[2, 2])  # no segment: the image itself
    assert (picture[ids == 2] == 255).all(-1).any()  # white outline of the thing
    assert not (picture[25:, 30:] == 255).all(-1).any()  # stuff (below the labels) is not outlined
    colours = class_colours(3)
    swatches = {tuple(c) for c in legend.reshape(-1, 3)}
    assert tuple(colours[0]) in swatches and tuple(colours[2]) in swatches and tuple(colours[1]) not in swatches


def test_panoptic_files_open_as_coco_panoptic(tmp_path):
    ids, panoptic = crafted_panoptic()
    panoptic.ids[0, 0] = 70000
    panoptic.segments.append(PanopticSegment(70000, 1, True, 0.6, 1))
    write_panoptic(tmp_path, "x", panoptic, ["cat", "dog", "sky"], [True, True, False])
    rgb = np.array(Image.open(tmp_path / "x_panoptic.png")).astype(np.int64)
    assert np.array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], panoptic.ids)
    document = json.loads((tmp_path / "x_panoptic.json").read_text())
    annotation, = document["annotations"]
    assert annotation["file_name"] == "x_panoptic.png"
    first = annotation["segments_info"][0]
    assert first == {"id": 1, "category_id": 0, "isthing": 1, "iscrowd": 0, "score": 0.9, "area": 100,
                     "bbox": [5, 5, 10, 10]}
    assert document["categories"][2] == {"id": 2, "name": "sky", "isthing": 0}


def test_instance_segments_keep_confident_instances_without_overlaps():
    masks = torch.zeros(4, 20, 30)
    masks[0, :10, :10] = 1  # score 0.6
    masks[1, 5:15, 5:15] = 1  # score 0.9: on top where the two overlap
    masks[2, 5:8, 5:8] = 1  # score 0.7, inside the 0.9 instance: no pixel left
    masks[3, 15:, 20:] = 1  # score 0.2: below the threshold
    instances = Instances((20, 30), pred_masks=masks, scores=torch.tensor([0.6, 0.9, 0.7, 0.2]),
                          pred_classes=torch.tensor([0, 1, 1, 0]))
    result = Segmentation(np.zeros((20, 30), np.int64), torch.zeros(3, 20, 30), ["cat", "dog", "sky"],
                          [True, True, False], instances=instances)
    segments = instance_segments(result, 0.5)
    assert [(s.id, s.category_id, s.isthing, s.area) for s in segments.segments] == [(1, 1, True, 100), (2, 0, True, 75)]
    assert [round(s.score, 6) for s in segments.segments] == [0.9, 0.6]
    assert (segments.ids[5:15, 5:15] == 1).all() and segments.ids[0, 0] == 2 and segments.ids[19, 29] == 0
    assert len(instance_segments(result, 0.1).segments) == 3


def test_class_regions_are_the_semantic_segments():
    labels = np.zeros((10, 10), np.int64)
    labels[:, 6:] = 2
    probabilities = torch.full((3, 10, 10), 0.1)
    probabilities[0, :, :6], probabilities[2, :, 6:] = 0.3, 0.8
    regions = class_regions(Segmentation(labels, probabilities, ["sky", "cat", "grass"], [False, True, False]))
    assert np.array_equal(regions.ids, labels + 1)
    assert [(s.id, s.category_id, s.isthing, s.area) for s in regions.segments] == [(1, 0, False, 60), (3, 2, False, 40)]
    assert [round(s.score, 6) for s in regions.segments] == [0.6, 0.8]  # the class's share of its pixels' scores


def test_highlight_darkens_all_but_the_segment_and_keeps_the_legend():
    ids, panoptic = crafted_panoptic()
    overlay = panoptic_overlay(np.full((40, 60, 3), 128, np.uint8), panoptic, ["cat", "dog", "sky"])
    picked = highlight_segment(overlay, ids, 3)
    assert picked.shape == overlay.shape and np.array_equal(picked[:, 60:], overlay[:, 60:])
    assert np.array_equal(picked[30, 50], overlay[30, 50])  # inside stuff segment 3
    assert (picked[2, 2] < overlay[2, 2]).all()  # elsewhere darker
    assert ((picked[:, :60] == (255, 255, 0)).all(-1) & (ids == 3)).any()  # outlined in yellow


def test_tasks_per_model():
    check_task("instance", get_family("EOV_SEG"))
    with pytest.raises(ValueError, match="SED shows semantic segmentation, not 'panoptic'; panoptic output needs a "
                                         "config of EOV-Seg"):
        check_task("panoptic", get_family("SED"))


@pytest.fixture(scope="module")
def eov_predictor():
    torch.manual_seed(0)
    return SEDPredictor.from_config_file(EOV_TINY, opts=NO_CACHE)


@pytest.mark.slow
def test_eov_predictor_gives_panoptic_instances_and_semantics(eov_predictor):
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    result = eov_predictor(image, ["red circle:thing", "sky", "grass"])
    assert eov_predictor.model.test_vocabulary.isthing == (True, False, False)
    assert result.probabilities.shape == (3, 70, 90) and result.labels.shape == (70, 90)
    assert result.panoptic.ids.shape == (70, 90) and result.panoptic.ids.dtype == np.int32
    for s in result.panoptic.segments:
        assert s.area == (result.panoptic.ids == s.id).sum() > 0 and 0 <= s.score <= 1
        assert s.isthing == (s.category_id == 0)
    assert set(result.instances.pred_classes.tolist()) <= {0}  # things only
    assert result.instances.pred_masks.shape[1:] == (70, 90)
    batch = eov_predictor.predict_batch([image, image[:50, :60]], ["red circle:thing", "sky", "grass"])
    assert [b.panoptic.ids.shape for b in batch] == [(70, 90), (50, 60)]
    assert [b.probabilities.shape[1:] for b in batch] == [(70, 90), (50, 60)]
    model = eov_predictor.model
    other = eov_predictor(image, "coco_panoptic")
    assert eov_predictor.model is model and other.probabilities.shape[0] == 133 and sum(other.isthing) == 80


def eov_demo(*args):
    return subprocess.run([sys.executable, "tools/demo.py", "--config-file", EOV_TINY, *args, "--opts", *NO_CACHE],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_eov_demo_is_robust_to_names_and_formats(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / folder / "same.png")
    Image.fromarray((rng.integers(0, 65536, (40, 50))).astype(np.uint16)).save(tmp_path / "a" / "deep.png")
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(tmp_path / "a" / "grey.png")
    Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)).save(tmp_path / "a" / "alpha.png")
    rotated = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated.save(tmp_path / "a" / "rotated.jpg", exif=exif)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    result = eov_demo("--input", str(tmp_path / "a"), str(tmp_path / "b" / "same.png"), "--output", str(out),
                      "--vocabulary", "red circle:thing", "sky", "grass:stuff")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipping" in result.stderr and "broken.jpg" in result.stderr
    shapes = {"a__same": (48, 64), "b__same": (48, 64), "deep": (40, 50), "grey": (40, 50), "alpha": (40, 50),
              "rotated": (50, 40)}
    for name, shape in shapes.items():
        assert np.array(Image.open(out / f"{name}_labels.png")).shape == shape, name
        assert np.array(Image.open(out / f"{name}_panoptic.png")).shape == (*shape, 3)
        assert Image.open(out / f"{name}_overlay.png").size[1] == shape[0]
        assert json.loads((out / f"{name}_panoptic.json").read_text())["categories"][0]["isthing"] == 1
    assert not list(out.glob("broken*")) and not list(out.glob("same_*"))


def test_eov_demo_refuses_a_bad_marker(tmp_path):
    result = eov_demo("--input", str(tmp_path), "--output", str(tmp_path / "o"), "--vocabulary", "cat:animal")
    assert result.returncode == 2 and "unknown marker" in result.stderr


def test_output_names_are_distinct_and_inputs_listed_once(tmp_path):
    for relative in ("a/x.png", "a/x.jpg", "b/x.png", "b/y.png"):
        (tmp_path / relative).parent.mkdir(exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    files = expand_inputs([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "b" / "y.png")])
    assert len(files) == 4
    names = {str(p.relative_to(tmp_path)): n for p, n in output_names(files).items()}
    assert names == {"a/x.png": "a__x_png", "a/x.jpg": "a__x_jpg", "b/x.png": "b__x", "b/y.png": "y"}
