"""Segment images in the browser, with any model family of the project (the config's
MODEL.META_ARCHITECTURE picks it: SED, EOV-Seg): a Gradio page on top of the Predictor and the
command-line demo's outputs (sed.tools.demo).

    python tools/web_demo.py --config-file configs/synthetic_tiny.yaml \\
        --opts MODEL.WEIGHTS output/synthetic_tiny/model_final.pth [--host 127.0.0.1 --port 7860]

(also ``python -m sed.tools.web_demo`` or ``sed-web-demo``), then open http://127.0.0.1:7860.
Upload or drop an image (or pick a generated example), type a vocabulary, one class per line as
in a vocabulary file ("dog, puppy" lists synonyms, "person:thing" marks a thing class), or pick
a benchmark vocabulary, and press Segment. The page shows the overlay with its legend and the
segments (class, thing/stuff, score, area; selecting a row picks the segment out), and offers
the files tools/demo.py writes for the same image, vocabulary and options: NAME_overlay.png,
NAME_labels.png, NAME_classes.json and, for the panoptic and instance tasks, NAME_panoptic.png /
NAME_panoptic.json. The options follow the model family (:mod:`sed.family`): its task when it
shows several (e.g. EOV-Seg: panoptic, semantic, instance), its inference settings a call may
change (e.g. SED's early rejection, TEST.FAST_INFERENCE and TEST.TOPK; EOV-Seg's panoptic
thresholds) and, when it shows instances, the instance confidence threshold.

The model is built once; text embeddings come from the model's cache (memory and disk), so a
vocabulary used before costs nothing. Requests wait in one queue and run one at a time (the
model holds one vocabulary at a time). A request that fails (no or unreadable image, an image
over --max-pixels, an empty vocabulary, an unknown marker) shows the reason on the page; the
server keeps serving. Nothing is fetched from the network: the page's scripts and fonts come
from the gradio package, analytics are off and no share link is made.

Each request's files go to a temporary folder (sed_web_demo_* in the system's temporary folder,
TMPDIR), removed when the server stops: on Ctrl-C or SIGTERM (kill, a service manager, a
container's stop). Wrong options (--port outside 1-65535, --max-pixels or --queue-size below 1)
stop at once; a config or checkpoint that does not fit stops with one line "web_demo.py: error:
..." (--debug adds the traceback).
"""
import argparse
import inspect
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from sed.family import config_value, families  # noqa: E402
from sed.outputs import DEFAULT_CONFIDENCE_THRESHOLD, read_image, write_outputs  # noqa: E402
from sed.predictor import Predictor, load_config, parse_vocabulary_spec  # noqa: E402
from sed.tools import cli  # noqa: E402
from sed.visualization import highlight_segment  # noqa: E402
from sed.vocabulary import Vocabulary  # noqa: E402

DEFAULT_MAX_PIXELS = 2048 * 2048
TYPED = "(the classes typed above)"  # the benchmark menu's first entry
MAX_TYPED_DEFAULT = 30  # the config's test vocabulary fills the text box up to this many classes
DOWNLOADS = {"overlay": "Overlay (PNG)", "labels": "Label map (PNG)", "classes": "Class table (JSON)",
             "panoptic": "Panoptic segments (PNG)", "panoptic_json": "Panoptic segments (JSON)"}
TABLE_HEADERS = ["id", "class", "thing/stuff", "score", "area (pixels)"]
# The examples: the model family's generated images (ModelFamily.example_image) of these seeds and side.
EXAMPLE_SEEDS = (1, 2, 3)
EXAMPLE_SIZE = 256
# The Segment function's first parameters (the API's, for gradio_client), before the option controls'.
SEGMENT_INPUTS = ("image", "vocabulary", "benchmark")
KEEP_RESULTS_S = 3600  # a request's files are deleted after this long (gradio serves its own copies)
logger = logging.getLogger("sed.web_demo")


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=cli.port, default=7860)
    parser.add_argument("--max-pixels", type=cli.positive_int, default=DEFAULT_MAX_PIXELS,
                        help="largest image accepted, in pixels (width x height)")
    parser.add_argument("--queue-size", type=cli.positive_int, default=64, help="most requests waiting at once")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return parser


def vocabulary_text(vocabulary: Vocabulary, marks: bool) -> str:
    """``vocabulary`` in the text box's syntax: one class per line, with ":thing" marks if ``marks``."""
    return "\n".join(n + (":thing" if t and marks else "") for n, t in zip(vocabulary.names, vocabulary.isthing))


def read_upload(upload: Optional[dict], max_pixels: int) -> Tuple[str, np.ndarray]:
    """(output NAME, (H, W, 3) RGB uint8) of an uploaded image (gradio's file payload), read as
    tools/demo.py reads files; a gr.Error says what is wrong with it."""
    if not upload or not upload.get("path"):
        raise gr.Error("No image: upload or drop one, or pick an example.")
    path = Path(upload["path"])
    shown = upload.get("orig_name") or path.name
    name = re.sub(r"[^\w.-]", "_", Path(shown).stem) or "image"
    unreadable = f"{shown} is not a readable image: upload a PNG, JPEG, BMP, TIFF or WebP file."
    limit = f"this server segments images of at most {max_pixels:,} pixels (--max-pixels); downscale it"
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Image.DecompressionBombError:
        raise gr.Error(f"{shown} is far too large: {limit}.") from None
    except (OSError, ValueError):
        raise gr.Error(unreadable) from None
    if width * height > max_pixels:
        raise gr.Error(f"{shown} is {width} x {height} = {width * height:,} pixels: {limit}.")
    image = read_image(path)
    if image is None:
        raise gr.Error(unreadable)
    return name, image


def segments_table(output, class_names: List[str]) -> List[list]:
    return [[s.id, class_names[s.category_id], "thing" if s.isthing else "stuff", round(s.score, 3),
             s.area] for s in output.segments.segments]


class WebDemo:
    """The page of one predictor, built from its model family (``predictor.family``);
    ``work_dir`` holds each request's files. The Segment button's function takes the page's
    inputs (and the API's, for gradio_client): ``image, vocabulary, benchmark``, then the task
    (a family showing several), one value per call option (``CallOption.attribute``) and the
    instance confidence threshold (a family showing instances)."""

    def __init__(self, predictor: Predictor, title: str, *, max_pixels: int, work_dir: Path):
        self.predictor, self.title, self.max_pixels, self.work_dir = predictor, title, max_pixels, work_dir
        self.family = predictor.family

    def examples(self) -> List[str]:
        """PNG paths of the family's generated example images."""
        folder = self.work_dir / "examples"
        folder.mkdir(exist_ok=True)
        paths = []
        for seed in EXAMPLE_SEEDS:
            path = folder / f"shapes_{seed}.png"
            cv2.imwrite(str(path), cv2.cvtColor(self.family.example_image(seed, EXAMPLE_SIZE), cv2.COLOR_RGB2BGR))
            paths.append(str(path))
        return paths

    def request_dir(self) -> Path:
        """A new folder for one request's files; those of requests older than KEEP_RESULTS_S go."""
        for old in self.work_dir.glob("request_*"):
            if old.stat().st_mtime < time.time() - KEEP_RESULTS_S:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="request_", dir=self.work_dir))

    def segment(self, upload: Optional[dict], typed: str, benchmark: str, *, options: dict, task: str,
                confidence_threshold: float) -> list:
        """Segment one uploaded image with the call ``options`` (config key -> value): the
        overlay, the segments table, the state for highlighting, a status line and one file per
        download button."""
        start = time.perf_counter()
        name, image = read_upload(upload, self.max_pixels)
        try:
            if benchmark and benchmark != TYPED:
                vocabulary = parse_vocabulary_spec(benchmark, self.family)
            else:
                vocabulary = parse_vocabulary_spec((typed or "").splitlines(), self.family, files=False)
            result = self.predictor(image, vocabulary, options)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        output = write_outputs(self.request_dir(), name, image, result, task=task,
                               confidence_threshold=confidence_threshold)
        state = {"overlay": output.overlay, "ids": output.segments.ids,
                 "segment_ids": [s.id for s in output.segments.segments]}
        status = (f"{len(output.segments.segments)} segments ({task}), {len(vocabulary)} classes, "
                  f"{image.shape[1]} x {image.shape[0]} pixels, {time.perf_counter() - start:.1f} s")
        files = [gr.update(value=str(output.files[k]), visible=True) if k in output.files else
                 gr.update(value=None, visible=False) for k in DOWNLOADS]
        return [str(output.files["overlay"]), segments_table(output, result.class_names), state, status, *files]

    @staticmethod
    def highlight(state, event: gr.SelectData):
        """The overlay with the segment of the selected table row picked out."""
        if not state or event.index is None or event.index[0] >= len(state["segment_ids"]):
            return gr.update()
        return highlight_segment(state["overlay"], state["ids"], state["segment_ids"][event.index[0]])

    def option_controls(self) -> Dict[str, gr.components.Component]:
        """The option controls, by the name of the Segment function's parameter: the task (a
        radio, the family's default first), a checkbox or slider per call option (starting at
        the config's value), the instance confidence threshold."""
        tasks = self.family.tasks
        controls = {}
        if len(tasks) > 1:
            controls["task"] = gr.Radio(list(tasks), value=tasks[0], label="Task")
        for option in self.family.call_options:
            value = config_value(self.predictor.cfg, option.key)
            if option.slider is None:
                controls[option.attribute] = gr.Checkbox(value, label=option.label)
            else:
                low, high, step = option.slider
                controls[option.attribute] = gr.Slider(low, high, value, step=step, label=option.label)
        if "instance" in tasks:
            controls["confidence_threshold"] = gr.Slider(0, 1, DEFAULT_CONFIDENCE_THRESHOLD, step=0.05,
                                                         label="Instance: lowest instance score shown")
        return controls

    def segment_button(self, controls: Sequence[str]) -> Callable:
        """The Segment button's function for the option controls named ``controls`` (those of
        :meth:`option_controls`, in order): the values -> :meth:`segment`. Its signature names
        the parameters, which gradio reads for the API (and for its progress bar)."""
        tasks = self.family.tasks
        options = {option.attribute: option.key for option in self.family.call_options}

        def segment(image, vocabulary, benchmark, *values):
            # The values arrive in the order of the controls, gradio's progress tracker last.
            chosen = dict(zip(controls, values))
            task = chosen.get("task", tasks[0])
            if task not in tasks:
                raise gr.Error(f"Unknown task {task!r}: choose one of {', '.join(tasks)}.")
            # Each option of the config value's type (a slider may give 8.0 for an int setting);
            # the API takes any JSON value, which may not convert.
            try:
                call = {key: type(config_value(self.predictor.cfg, key))(chosen[attribute])
                        for attribute, key in options.items()}
                threshold = float(chosen.get("confidence_threshold", DEFAULT_CONFIDENCE_THRESHOLD))
            except (TypeError, ValueError) as error:
                raise gr.Error(f"An option is not of its type: {error}.") from None
            return self.segment(image, vocabulary, benchmark, options=call, task=task, confidence_threshold=threshold)

        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        segment.__signature__ = inspect.Signature(
            [inspect.Parameter(name, positional) for name in (*SEGMENT_INPUTS, *controls)]
            + [inspect.Parameter("progress", positional, default=gr.Progress(track_tqdm=True))])
        return segment

    def build(self) -> gr.Blocks:
        default = self.predictor.default_vocabulary
        marks = self.family.marks_things
        page_title = f"{' / '.join(f.title for f in families())} web demo"
        with gr.Blocks(title=page_title, analytics_enabled=False,
                       delete_cache=(KEEP_RESULTS_S, KEEP_RESULTS_S)) as blocks:
            gr.Markdown(f"## Open-vocabulary segmentation: {self.title}")
            state = gr.State()
            with gr.Row():
                with gr.Column():
                    upload = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image",
                                      elem_id="input-image")
                    shown = vocabulary_text(default, marks) if len(default) <= MAX_TYPED_DEFAULT else ""
                    things = ("its instances are outlined and counted" if marks else
                              f"{self.family.title} segments things and stuff alike")
                    typed = gr.Textbox(shown,
                                       lines=5, max_lines=20, label="Vocabulary: one class per line",
                                       info=f'"dog, puppy" lists synonyms; "person:thing" marks a thing class '
                                            f"({things}), a bare name is stuff",
                                       elem_id="vocabulary")
                    benchmark = gr.Dropdown([TYPED, *self.family.benchmark_vocabularies], value=TYPED,
                                            label="or a benchmark vocabulary", elem_id="benchmark")
                    with gr.Accordion("Options", open=False):
                        controls = self.option_controls()
                    button = gr.Button("Segment", variant="primary", elem_id="segment")
                    gr.Examples(self.examples(), inputs=[upload], label="Examples (generated by the project)",
                                elem_id="examples")
                with gr.Column():
                    overlay = gr.Image(type="filepath", format="png", label="Overlay", interactive=False,
                                       elem_id="overlay")
                    status = gr.Markdown(elem_id="status")
                    table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="segments",
                                         label="Segments (select a row to pick it out)")
                    with gr.Row():
                        downloads = [gr.DownloadButton(label, visible=False, elem_id=f"download-{key}")
                                     for key, label in DOWNLOADS.items()]
            button.click(self.segment_button(list(controls)), inputs=[upload, typed, benchmark, *controls.values()],
                         outputs=[overlay, table, state, status, *downloads], api_name="segment", preprocess=False)
            table.select(self.highlight, inputs=[state], outputs=[overlay], api_visibility="private")
        return blocks


def stop_on_sigterm(signum, frame):
    """SIGTERM's handler: stop as Ctrl-C does, by an exception that unwinds :func:`serve` (whose
    ``with`` removes the temporary folder); Python's default for SIGTERM ends the process at
    once, with neither ``finally`` nor ``atexit``."""
    logger.info("Stopping (signal %d)", signum)
    raise SystemExit(0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    return cli.run_cli(build_parser(), serve, argv)


def serve(args: argparse.Namespace) -> int:
    """Build the model and serve the page until stopped (Ctrl-C or SIGTERM)."""
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        cfg = load_config(args.config_file, opts=args.opts)
        predictor = Predictor(cfg)
        with tempfile.TemporaryDirectory(prefix="sed_web_demo_", ignore_cleanup_errors=True) as work_dir:
            title = f"{predictor.family.title} ({args.config_file}, weights: {cfg.MODEL.WEIGHTS or 'random init'})"
            blocks = WebDemo(predictor, title, max_pixels=args.max_pixels, work_dir=Path(work_dir)).build()
            blocks.queue(default_concurrency_limit=1, max_size=args.queue_size)
            blocks.launch(server_name=args.host, server_port=args.port, share=False, show_error=True,
                          ssr_mode=False, footer_links=["api"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
