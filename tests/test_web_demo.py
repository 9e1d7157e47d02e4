"""tools/web_demo.py: a server per model on 127.0.0.1 (tiny random checkpoints), driven through
gradio_client (the files of tools/demo.py for the same image, vocabulary and options; clear
errors; a queue that survives malformed requests) and in headless Chromium
(tools/web_demo_browser.py, the steps of docs/web_demo.png)."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from helpers import ROOT, eov_cfg, load_repository_tool

gradio_client = pytest.importorskip(
    "gradio_client", reason="the web extra is not installed (pip install -e .[web]; bash tools/install.sh does)")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from sed.data.synthetic import make_panoptic_sample, make_sample  # noqa: E402
from sed.family import get_family  # noqa: E402
from sed.resources import vocabulary_path  # noqa: E402
from sed.tools.web_demo import EXAMPLE_SEEDS, EXAMPLE_SIZE, TYPED  # noqa: E402

web_demo_browser = load_repository_tool("web_demo_browser")
Browser, Server, browser_missing = web_demo_browser.Browser, web_demo_browser.Server, web_demo_browser.browser_missing

SED_CONFIG = "configs/synthetic_tiny.yaml"
EOV_CONFIG = "configs/eov_seg/synthetic_tiny.yaml"
MAX_PIXELS = 70_000  # the servers' --max-pixels: the test images are 200 x 160, the examples 256 x 256
SED_CLASSES = ["background", "red circle", "green square", "blue triangle", "yellow star"]
EOV_CLASSES = ["red circle:thing", "blue triangle:thing", "yellow star:thing", "sky", "grass"]


def write_png(path: Path, image: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    return {
        "shapes": write_png(folder / "shapes.png", make_sample(rng, 200)[0][:160]),
        "panoptic": write_png(folder / "panoptic.png", make_panoptic_sample(rng, 200)[0][:160]),
        "large": write_png(folder / "large.png", np.zeros((240, 300, 3), np.uint8)),
        "broken": (folder / "broken.png").write_bytes(b"\x89PNG not an image") and folder / "broken.png",
    }


@pytest.fixture(scope="module")
def eov_weights(tmp_path_factory):
    """A checkpoint of configs/eov_seg/synthetic_tiny.yaml's EOV-Seg, randomly initialised (seed 0)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("eov_weights") / "tiny.pth"
    torch.save({"model": build_model(eov_cfg(config_file=ROOT / EOV_CONFIG)).state_dict()}, path)
    return path


class Running:
    """A web demo server with a client, the opts it was started with and its text cache."""

    def __init__(self, config: str, opts: list, cache: Path, tmp: Path):
        self.config, self.opts, self.cache = config, opts, cache
        self.server = Server(config, opts, args=["--max-pixels", str(MAX_PIXELS)], log=tmp / "server.log")
        self.client = Client(self.server.url, verbose=False, download_files=str(tmp / "downloads"))
        self.url = self.server.url


@pytest.fixture(scope="module")
def sed_server(weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sed_server")
    opts = ["MODEL.WEIGHTS", str(weights), "MODEL.SEM_SEG_HEAD.PROMPT_TEMPLATES", "single",
            "MODEL.SEM_SEG_HEAD.TEXT_CACHE_DIR", str(tmp / "text_cache")]
    running = Running(SED_CONFIG, opts, tmp / "text_cache", tmp)
    yield running
    running.server.stop()


@pytest.fixture(scope="module")
def eov_server(eov_weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eov_server")
    opts = ["MODEL.WEIGHTS", str(eov_weights), "MODEL.EOV_SEG.TEXT_CACHE_DIR", str(tmp / "text_cache")]
    running = Running(EOV_CONFIG, opts, tmp / "text_cache", tmp)
    yield running
    running.server.stop()


def cli_files(running: Running, image: Path, vocabulary: list, out: Path, args=(), opts=()) -> dict:
    """tools/demo.py's files (name -> bytes) for ``image``, with the server's config and opts."""
    result = subprocess.run([sys.executable, "tools/demo.py", "--config-file", running.config, "--input", str(image),
                             "--output", str(out), "--vocabulary", *vocabulary, *args, "--opts", *running.opts, *opts],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {p.name: p.read_bytes() for p in out.iterdir()}


def sed_request(running: Running, image: Path, vocabulary: str, benchmark: str = TYPED, fast=False, topk=8):
    return running.client.predict(handle_file(str(image)), vocabulary, benchmark, fast, topk, api_name="/segment")


def eov_request(running: Running, image: Path, vocabulary: str, task: str = "panoptic", object_mask_threshold=0.0,
                overlap_threshold=0.8, confidence_threshold=0.5):
    return running.client.predict(handle_file(str(image)), vocabulary, TYPED, task, object_mask_threshold,
                                  overlap_threshold, confidence_threshold, api_name="/segment")


def web_files(outputs) -> dict:
    """The files offered for download (name -> bytes); the shown overlay is the overlay file.
    ``outputs``: the overlay, the segments table, the status line, the download buttons."""
    files = {Path(b["value"]).name: Path(b["value"]).read_bytes() for b in outputs[3:] if b["visible"]}
    assert Path(outputs[0]).read_bytes() == files[Path(outputs[0]).name]
    return files


def rows(outputs) -> list:
    return outputs[1]["data"]


@pytest.fixture(scope="module")
def sed_reference(sed_server, images, tmp_path_factory):
    return cli_files(sed_server, images["shapes"], SED_CLASSES, tmp_path_factory.mktemp("sed_cli"))


@pytest.mark.slow
def test_sed_page_gives_the_command_line_demos_files(sed_server, sed_reference, images, tmp_path):
    outputs = sed_request(sed_server, images["shapes"], "\n".join(SED_CLASSES))
    assert web_files(outputs) == sed_reference
    assert set(sed_reference) == {"shapes_overlay.png", "shapes_labels.png", "shapes_classes.json"}
    labels = cv2.imdecode(np.frombuffer(sed_reference["shapes_labels.png"], np.uint8), cv2.IMREAD_UNCHANGED)
    counts = np.bincount(labels.ravel(), minlength=len(SED_CLASSES))
    assert [(r[0], r[1], r[2], r[4]) for r in rows(outputs)] == [
        (c + 1, SED_CLASSES[c], "stuff", int(counts[c])) for c in np.nonzero(counts)[0]]
    assert outputs[2].startswith(f"{len(rows(outputs))} segments (semantic), 5 classes, 200 x 160 pixels")

    fast = sed_request(sed_server, images["shapes"], "\n".join(SED_CLASSES), fast=True, topk=2)
    assert web_files(fast) == cli_files(sed_server, images["shapes"], SED_CLASSES, tmp_path / "fast",
                                        opts=["TEST.FAST_INFERENCE", "True", "TEST.TOPK", "2"])


@pytest.mark.slow
def test_eov_seg_page_gives_the_command_line_demos_files(eov_server, images, tmp_path):
    typed = "\n".join(EOV_CLASSES)
    panoptic = eov_request(eov_server, images["panoptic"], typed)
    reference = cli_files(eov_server, images["panoptic"], EOV_CLASSES, tmp_path / "panoptic")
    assert web_files(panoptic) == reference and len(reference) == 5
    document = json.loads(reference["panoptic_panoptic.json"])
    names = [c.split(":")[0] for c in EOV_CLASSES]
    assert [[s["id"], names[s["category_id"]], "thing" if s["isthing"] else "stuff", round(s["score"], 3), s["area"]]
            for s in document["annotations"][0]["segments_info"]] == rows(panoptic)
    assert rows(panoptic) and {r[2] for r in rows(panoptic)} <= {"thing", "stuff"}

    instance = eov_request(eov_server, images["panoptic"], typed, "instance", 0.2, 0.6, 0.0)
    reference = cli_files(eov_server, images["panoptic"], EOV_CLASSES, tmp_path / "instance",
                          args=["--task", "instance", "--confidence-threshold", "0.0"],
                          opts=["MODEL.EOV_SEG.TEST.OBJECT_MASK_THRESHOLD", "0.2",
                                "MODEL.EOV_SEG.TEST.OVERLAP_THRESHOLD", "0.6"])
    assert web_files(instance) == reference
    assert rows(instance) and all(r[2] == "thing" for r in rows(instance))  # instances of thing classes only

    semantic = eov_request(eov_server, images["panoptic"], typed, "semantic")
    files = web_files(semantic)
    assert set(files) == {"panoptic_overlay.png", "panoptic_labels.png", "panoptic_classes.json"}
    assert files["panoptic_labels.png"] == web_files(panoptic)["panoptic_labels.png"]
    assert semantic[2].startswith(f"{len(rows(semantic))} segments (semantic)")


@pytest.mark.parametrize("case, message", [
    ("no image", "No image: upload or drop one"),
    ("unreadable image", "broken.png is not a readable image"),
    ("image too large", "large.png is 300 x 240 = 72,000 pixels: this server segments images of at most 70,000 pixels"),
    ("empty vocabulary", "The vocabulary is empty"),
    ("malformed marker", "'cat:animal' ends with the unknown marker 'animal'"),
    ("another model's benchmark", "'coco_panoptic' is a benchmark vocabulary of EOV-Seg"),
])
def test_bad_requests_say_what_is_wrong(sed_server, images, case, message):
    image, typed = {"no image": (None, "cat"), "unreadable image": (images["broken"], "cat"),
                    "image too large": (images["large"], "cat"), "empty vocabulary": (images["shapes"], "\n  \n"),
                    "malformed marker": (images["shapes"], "dog\ncat:animal"),
                    "another model's benchmark": (images["shapes"], "coco_panoptic")}[case]
    with pytest.raises(AppError, match=message):
        sed_server.client.predict(handle_file(str(image)) if image else None, typed, TYPED, False, 8,
                                  api_name="/segment")


def test_vocabularies_typed_or_picked(sed_server, images, tmp_path):
    classes = tmp_path / "classes.json"
    classes.write_text('["cat", "dog"]')
    typed_path = sed_request(sed_server, images["shapes"], str(classes))  # a class name: the server reads no file
    assert json.loads(web_files(typed_path)["shapes_classes.json"]) == {"0": str(classes)}
    voc20 = json.loads(web_files(sed_request(sed_server, images["shapes"], "", "voc20"))["shapes_classes.json"])
    assert list(voc20.values()) == json.loads(vocabulary_path("voc20.json").read_text())


def test_twenty_queued_requests_some_malformed(sed_server, sed_reference, images):
    log = sed_server.server.log
    built, cached = log.read_text().count("Building CLIP"), sorted(sed_server.cache.iterdir())
    malformed = {1: (images["broken"], "cat"), 4: (images["shapes"], ""), 7: (images["shapes"], "a:b"),
                 10: (images["large"], "cat"), 13: (images["broken"], ""), 16: (images["shapes"], "x:y")}
    jobs = []
    for i in range(20):
        image, typed = malformed.get(i, (images["shapes"], "\n".join(SED_CLASSES)))
        jobs.append(sed_server.client.submit(handle_file(str(image)), typed, TYPED, False, 8, api_name="/segment"))
    answered, failed = 0, 0
    for i, job in enumerate(jobs):
        if i in malformed:
            with pytest.raises(AppError):
                job.result(timeout=600)
            failed += 1
        else:
            assert web_files(job.result(timeout=600)) == sed_reference
            answered += 1
    assert (answered, failed) == (14, 6)
    # built once; the vocabulary's text embeddings were cached by the first request
    assert log.read_text().count("Building CLIP") == built == 1
    assert sorted(sed_server.cache.iterdir()) == cached


@pytest.mark.browser
@pytest.mark.parametrize("model", ["sed", "eov"])
def test_in_a_headless_browser(model, request, images, tmp_path):
    missing = browser_missing()
    if missing:
        pytest.skip(f"no headless browser: {missing}")
    running = request.getfixturevalue(f"{model}_server")
    image, classes = (images["shapes"], SED_CLASSES) if model == "sed" else (images["panoptic"], EOV_CLASSES)
    request = sed_request if model == "sed" else eov_request
    expected = rows(request(running, image, "\n".join(classes)))
    family = get_family("SED" if model == "sed" else "EOV_SEG")
    example = write_png(tmp_path / "example.png", family.example_image(EXAMPLE_SEEDS[0], EXAMPLE_SIZE))
    expected_example = rows(request(running, example, "\n".join(classes)))
    browser = Browser()
    try:
        browser.open(running.url)
        browser.upload(image)
        browser.type_vocabulary("\n".join(classes))
        overlay, table = browser.segment()
        assert "/gradio_api/file=" in overlay and overlay.endswith("_overlay.png")
        assert table == [[str(v) for v in row] for row in expected]
        browser.screenshot(tmp_path / "page.png")
        page = cv2.imread(str(tmp_path / "page.png"))
        assert page.shape[1] > 1000 and page.shape[0] > 800 and page.std() > 10  # the page, not blank
        assert browser.select_row(len(table) - 1) != overlay  # the segment picked out
        browser.pick_example(0)  # the first example image, with the vocabulary typed
        assert browser.segment()[1] == [[str(v) for v in row] for row in expected_example]
        browser.type_vocabulary("dog\ncat:animal")
        browser.find("#segment").click()
        assert "'cat:animal' ends with the unknown marker 'animal'" in browser.error_text("unknown marker")
        outside = [u for u in browser.requests() if u.startswith(("http:", "https:", "ws:", "wss:"))
                   and not u.startswith(running.url)]
        assert not outside  # everything the page loads comes from the server
    finally:
        browser.close()
