"""The command-line tools on bad input (issue 37, the command-line side): numeric options out of
range stop at parse time, output paths that cannot be used stop before any model is built (or
their folders are created), expected errors are one line with status 1 (the traceback with
--debug), and the web demo removes its temporary folder when stopped with SIGTERM and answers
options it cannot use with a clear error. The tools run in-process (``main([...])``) except
where their process is what is tested."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, TINY_TEXT, load_repository_tool
from sed.tools import benchmark, check_dataset, cli, demo, export

SED_TINY = str(ROOT / "configs" / "synthetic_tiny.yaml")


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Building a model (the demo's Predictor, the build_model of export and benchmark) fails
    the test: the checks under test come before it."""
    def built(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(demo, "Predictor", built)
    monkeypatch.setattr(export, "build_model", built)
    monkeypatch.setattr(benchmark, "build_model", built)


def demo_args(image: Path, output, *args) -> list:
    return ["--config-file", SED_TINY, "--input", str(image), "--output", str(output), "--vocabulary", "cat", "dog",
            *args, "--opts", *TINY_TEXT]


def parse_error(main, argv, capsys) -> str:
    """The stderr of ``main(argv)``, which must stop as argparse does (status 2)."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("size", ["0", "-1"])
def test_demo_batch_size_below_one_is_refused_at_parse_time(size, image, tmp_path, capsys):
    err = parse_error(demo.main, demo_args(image, tmp_path / "out", "--batch-size", size), capsys)
    assert f"error: argument --batch-size: must be a positive integer, not {size}" in err
    assert not (tmp_path / "out").exists()


def tool_module(name: str):
    if name == "web_demo":
        pytest.importorskip("gradio", reason="the web extra is not installed (pip install -e .[web])")
        from sed.tools import web_demo

        return web_demo
    return {"demo": demo, "benchmark": benchmark, "export": export, "check_dataset": check_dataset}[name]


# What each tool runs once its arguments are parsed.
BODIES = {"demo": "segment", "benchmark": "benchmark", "export": "export", "web_demo": "serve",
          "check_dataset": "check"}


@pytest.mark.parametrize("tool, args, message", [
    ("demo", ["--confidence-threshold", "1.5"],
     "argument --confidence-threshold: must be a number from 0 to 1, not 1.5"),
    ("benchmark", ["--batch-size", "0"], "argument --batch-size: must be a positive integer, not 0"),
    ("benchmark", ["--iters", "0"], "argument --iters: must be a positive integer, not 0"),
    ("benchmark", ["--warmup", "-1"], "argument --warmup: must be an integer of 0 or more, not -1"),
    ("benchmark", ["--image-size", "640", "0"], "argument --image-size: must be a positive integer, not 0"),
    ("benchmark", ["--topk", "two"], "argument --topk: must be a positive integer, not 'two'"),
    ("export", ["--output", "m.onnx", "--height", "-5", "--width", "8"],
     "argument --height: must be an integer of 0 or more, not -5"),
    ("web_demo", ["--port", "70000"], "argument --port: must be a port number from 1 to 65535, not 70000"),
    ("web_demo", ["--max-pixels", "0"], "argument --max-pixels: must be a positive integer, not 0"),
    ("web_demo", ["--queue-size", "-3"], "argument --queue-size: must be a positive integer, not -3"),
    ("check_dataset", ["--workers", "-1"], "argument --workers: must be an integer of 0 or more, not -1"),
])
def test_numeric_options_out_of_range_are_refused_at_parse_time(tool, args, message, image, tmp_path, capsys,
                                                                monkeypatch):
    module = tool_module(tool)

    def ran(args):  # past the parser: a model built, a server started
        raise AssertionError(f"{tool} ran with {args}")

    monkeypatch.setattr(module, BODIES[tool], ran)
    if tool == "demo":
        argv = demo_args(image, tmp_path / "out", *args)
    elif tool == "check_dataset":
        argv = [str(tmp_path), *args]
    else:
        argv = ["--config-file", SED_TINY, *args]
    assert message in parse_error(module.main, argv, capsys)


def test_demo_output_that_is_a_file_stops_before_the_model(image, tmp_path, capsys, no_model):
    output = tmp_path / "results.txt"
    output.write_text("not a folder")
    assert demo.main(demo_args(image, output)) == 2
    err = capsys.readouterr().err
    assert f"error: --output {output} is a file: give a folder" in err and "Traceback" not in err
    assert output.read_text() == "not a folder"


def test_demo_output_folder_without_write_permission_stops_before_the_model(image, tmp_path, capsys, no_model):
    if os.geteuid() == 0:
        pytest.skip("running as root, which writes in a folder without write permission: "
                    "test_demo_output_folder_that_cannot_be_written_stops_before_the_model covers the check")
    output = tmp_path / "read_only"
    output.mkdir()
    output.chmod(0o555)
    try:
        assert demo.main(demo_args(image, output)) == 2
    finally:
        output.chmod(0o755)
    assert f"error: --output {output}: cannot write in this folder" in capsys.readouterr().err


def test_demo_output_folder_that_cannot_be_written_stops_before_the_model(image, tmp_path, capsys, no_model,
                                                                          monkeypatch):
    """As on a read-only mount, where even root cannot write: os.access says no."""
    output = tmp_path / "read_only"
    output.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != output and access(path, mode, **kw))
    assert demo.main(demo_args(image, output)) == 2
    assert (f"error: --output {output}: cannot write in this folder (permission denied or a read-only file system)"
            in capsys.readouterr().err)


@pytest.mark.slow
def test_export_creates_the_missing_folder_of_its_output(tmp_path, capsys):
    output = tmp_path / "new" / "folder" / "tiny.onnx"
    assert export.main(["--config-file", SED_TINY, "--output", str(output), "--no-check", "--opts", *TINY_TEXT]) == 0
    assert output.stat().st_size > 0


@pytest.mark.parametrize("tool", ["export", "benchmark"])
def test_output_file_that_is_a_folder_stops_before_the_model(tool, tmp_path, capsys, no_model):
    if tool == "export":
        argv = ["--config-file", SED_TINY, "--text-encoder", str(tmp_path), "--opts", *TINY_TEXT]
        assert export.main(argv) == 2
    else:
        argv = ["--config-file", SED_TINY, "--vocabulary", "3", "--fast", "--topk", "1", "2", "--plot", str(tmp_path)]
        assert benchmark.main(argv) == 2
    option = "--text-encoder" if tool == "export" else "--plot"
    assert f"error: {option} {tmp_path} is a folder: give a file name" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["a file in the way", "a file that cannot be overwritten"])
def test_output_file_that_cannot_be_written_stops_before_the_model(case, tmp_path, capsys, no_model, monkeypatch):
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"")
    if case == "a file in the way":
        output = existing / "model.onnx"
        message = f"cannot create the folder {existing}: it or a folder above it is a file"
    else:  # as without write permission (which root has all the same)
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != existing and access(path, mode, **kw))
        output, message = existing, "the file exists and cannot be overwritten"
    assert export.main(["--config-file", SED_TINY, "--output", str(output), "--opts", *TINY_TEXT]) == 2
    assert f"error: --output {output}: {message}" in capsys.readouterr().err


def test_benchmark_creates_the_missing_folder_of_its_output(tmp_path, capsys):
    output = tmp_path / "new" / "results.json"
    assert benchmark.main(["--config-file", SED_TINY, "--vocabulary", "3", "--device", "cpu", "--warmup", "0",
                           "--iters", "1", "--image-size", "64", "--random-text-embeddings", "--no-flops",
                           "--output", str(output), "--opts", *TINY_TEXT]) == 0
    assert json.loads(output.read_text())["image_size"] == [64, 64]


@pytest.mark.slow
def test_expected_error_is_one_line_with_status_1_and_the_traceback_with_debug(image, tmp_path):
    """A tool's ValueError (here a config key that does not exist) as the user sees it."""
    command = [sys.executable, "tools/demo.py", *demo_args(image, tmp_path / "out")[:-2], "TEST.FAST_INFERENCEE", "1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "demo.py: error: the overrides: TEST.FAST_INFERENCEE is not a config key; did you mean TEST.FAST_INFERENCE?"]
    debug = subprocess.run([*command[:2], "--debug", *command[2:]], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == result.stderr.strip()


def test_system_errors_name_the_file_and_bugs_keep_their_traceback(capsys):
    parser = cli.ArgumentParser(prog="tool.py")

    def unwritable(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/out/x.png")

    assert cli.run_cli(parser, unwritable, []) == 1
    assert capsys.readouterr().err == "tool.py: error: /out/x.png: Permission denied\n"

    def bug(args):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.run_cli(parser, bug, [])


@pytest.mark.slow
def test_web_demo_removes_its_temporary_folder_on_sigterm(weights, tmp_path):
    pytest.importorskip("gradio", reason="the web extra is not installed (pip install -e .[web])")
    server_tool = load_repository_tool("web_demo_browser")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary)}
    server = server_tool.Server("configs/synthetic_tiny.yaml", ["MODEL.WEIGHTS", str(weights), *TINY_TEXT], env=env,
                                log=tmp_path / "server.log")
    try:
        work_dirs = list(temporary.glob("sed_web_demo_*"))
        assert len(work_dirs) == 1 and (work_dirs[0] / "examples").is_dir()
        server.process.terminate()  # SIGTERM
        assert server.process.wait(60) == 0, server.tail()
    finally:
        server.stop()
    assert not work_dirs[0].exists(), server.tail()


@pytest.fixture(scope="module")
def web_page(weights, tmp_path_factory):
    """The SED web demo's page object on the tiny checkpoint, and an image to upload."""
    pytest.importorskip("gradio", reason="the web extra is not installed (pip install -e .[web])")
    from sed.predictor import Predictor, load_config
    from sed.tools.web_demo import WebDemo

    folder = tmp_path_factory.mktemp("web_page")
    predictor = Predictor(load_config(SED_TINY, weights=str(weights), opts=TINY_TEXT))
    page = WebDemo(predictor, "tiny", max_pixels=10**6, work_dir=folder)
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(folder / "image.png")
    return page, {"path": str(folder / "image.png")}


@pytest.mark.parametrize("topk, message", [
    (0, "TEST.TOPK is 0; it takes values at least 1"),
    ("eight", "An option is not of its type: invalid literal for int() with base 10: 'eight'"),
])
def test_web_demo_option_it_cannot_use_is_a_clear_error(web_page, topk, message):
    import gradio as gr
    from sed.tools.web_demo import TYPED

    page, upload = web_page
    segment = page.segment_button([option.attribute for option in page.family.call_options])
    with pytest.raises(gr.Error) as error:
        segment(upload, "cat\ndog", TYPED, True, topk)
    assert message in str(error.value)
