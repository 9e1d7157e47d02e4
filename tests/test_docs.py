"""The documentation against the repository: every relative link resolves (to a file, and to a
heading of it where the link has an anchor), every repository path the pages name exists, every
command in their code blocks names a script that exists and uses only flags its parser accepts,
the README stays short, and the SED quick start's printed promise is the floor of its runs."""
import json
import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from helpers import ROOT, quick_start_promise
from sed.resources import resolve_data_file

PAGES = ["README.md", "GETTING_STARTED.md", "MODEL_ZOO.md", "INSTALL.md", "CHANGELOG.md",
         "datasets/README.md", "tests/README.md", "benchmarks/README.md",
         *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 150

# Top-level folders of the repository: a path in the pages that starts with one of them names
# a repository file or folder (others, such as output/ or my_dataset/, are the user's).
REPOSITORY_FOLDERS = ("sed", "configs", "tools", "datasets", "tests", "benchmarks", "docs", ".ci")
# What a repository file path ends with; a path without one of these (and without a trailing
# "/") is a generated folder or a placeholder (datasets/my_dataset).
FILE_SUFFIXES = (".py", ".sh", ".yaml", ".yml", ".md", ".json", ".png", ".txt", ".ini", ".toml", ".cfg")
# Path characters: anything else (globs, braces, placeholders, spaces) is not one literal path.
PATH = re.compile(r"[A-Za-z0-9_.\-/]+")

FENCE = re.compile(r"^ {0,3}(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")

# Commands in code blocks: the interpreter (optionally a venv's), the script; sh / bash scripts.
PYTHON = re.compile(r"^(?:\S*/)?python3?$")
PYTHON_SCRIPT = re.compile(r"^(tools/[\w-]+\.py|datasets/[\w-]+\.py|train_net\.py)$")
SHELL_SCRIPT = {"sh": re.compile(r"^(run\.sh|eval\.sh)$"), "bash": re.compile(r"^tools/[\w-]+\.sh$")}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z0-9][\w-]*")


def split_page(text: str):
    """(prose, code blocks): the page's text outside fenced code blocks (their lines blanked, so
    line counts stay), and the blocks' contents."""
    prose, blocks, block = [], [], None
    for line in text.splitlines():
        if FENCE.match(line):
            if block is None:
                block = []
            else:
                blocks.append("\n".join(block))
                block = None
            prose.append("")
        elif block is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    if block is not None:
        blocks.append("\n".join(block))
    return "\n".join(prose), blocks


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the text as rendered (code marks and link targets dropped),
    lower case, without punctuation but hyphens and underscores, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset:
    prose, _ = split_page(page.read_text(encoding="utf-8"))
    seen, found = {}, set()
    for line in prose.splitlines():
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def repository_paths(words):
    """The words that name a repository file or folder (relative to the repository root)."""
    for word in words:
        word = word.strip("\"'(),;:")
        if not PATH.fullmatch(word) or "/" not in word or word.split("/")[0] not in REPOSITORY_FOLDERS:
            continue
        if word.endswith("/"):
            yield word
        elif word.endswith(FILE_SUFFIXES) and (ROOT / word).parent.is_dir():
            yield word


def exists(path: str) -> bool:
    """Whether the repository has ``path``, or, for a config's file value such as
    ``datasets/coco.json``, the package has the file it resolves to."""
    return (ROOT / path).exists() or Path(resolve_data_file(path)).is_file()


def commands(block: str):
    """The command lines of a code block, continuation lines joined, as lists of words."""
    for line in re.sub(r"\\\n", " ", block).splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split("#")[0].split()
        while words and ENV_ASSIGNMENT.match(words[0]):
            words = words[1:]
        if words:
            yield words


def flags_used(arguments):
    """The --flags of a python command's arguments, up to --opts (after it: config KEY VALUE)."""
    for word in arguments:
        word = word.strip("[]")
        if "..." in word:
            continue
        if word.startswith("--") and len(word) > 2:
            flag = word.split("=")[0]
            yield flag
            if flag == "--opts":
                return


def documented():
    """(page, text) of every documentation page."""
    for name in PAGES:
        path = ROOT / name
        assert path.is_file(), f"{name}: documentation page missing"
        yield name, path.read_text(encoding="utf-8")


def python_commands():
    """(page, script, flags) of every python command in the pages' code blocks."""
    for name, text in documented():
        for block in split_page(text)[1]:
            for words in commands(block):
                if PYTHON.match(words[0]) and len(words) > 1 and PYTHON_SCRIPT.match(words[1]):
                    yield name, words[1], sorted(set(flags_used(words[2:])))


# Runs every script's --help in one interpreter (torch and detectron2 imported once), each with
# its own sys.argv and __main__, and prints {script: help text or the error}.
HELP_RUNNER = """
import contextlib, io, json, runpy, sys, traceback
out = {}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            text.write(f"exit status {stop.code}")
    except BaseException:
        text.write(traceback.format_exc())
    out[script] = text.getvalue()
print(json.dumps(out))
"""


@lru_cache(maxsize=None)
def accepted_flags(scripts: tuple) -> dict:
    """{script: the --flags its --help lists}, from `python SCRIPT --help` run in a subprocess
    from the repository root with PYTHONPATH set to it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", HELP_RUNNER, *scripts], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    helps = json.loads(result.stdout.splitlines()[-1])
    return {script: (set(FLAG.findall(text)), text) for script, text in helps.items()}


@pytest.mark.parametrize("name", PAGES)
def test_links_resolve(name):
    page = ROOT / name
    prose, _ = split_page(page.read_text(encoding="utf-8"))
    prose = CODE_SPAN.sub("", prose)
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: {path} does not exist")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {path or name}")
    assert not broken, f"{name}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("name", PAGES)
def test_named_repository_paths_exist(name):
    prose, blocks = split_page((ROOT / name).read_text(encoding="utf-8"))
    words = [span for _, span in CODE_SPAN.findall(prose)]
    words += [word for block in blocks for line in block.splitlines() for word in line.split()]
    missing = sorted({path for path in repository_paths(words) if not exists(path)})
    assert not missing, f"{name} names repository paths that do not exist: {missing}"


def test_commands_name_existing_scripts():
    missing = []
    for name, text in documented():
        for block in split_page(text)[1]:
            for words in commands(block):
                script = words[1] if len(words) > 1 else ""
                known = ((PYTHON.match(words[0]) and PYTHON_SCRIPT.match(script))
                         or (words[0] in SHELL_SCRIPT and SHELL_SCRIPT[words[0]].match(script)))
                if known and not (ROOT / script).is_file():
                    missing.append(f"{name}: {' '.join(words[:2])}")
    assert not missing, "commands of scripts that do not exist:\n" + "\n".join(missing)


def test_commands_use_flags_their_scripts_accept():
    found = [(name, script, flags) for name, script, flags in python_commands() if (ROOT / script).is_file()]
    assert found, "no python commands found in the documentation's code blocks"
    accepted = accepted_flags(tuple(sorted({script for _, script, _ in found})))
    wrong = []
    for name, script, flags in found:
        known, help_text = accepted[script]
        assert "--help" in known, f"`python {script} --help` printed no usage:\n{help_text[-2000:]}"
        wrong += [f"{name}: python {script} {flag}" for flag in flags if flag not in known]
    assert not wrong, "flags their scripts do not accept:\n" + "\n".join(wrong)


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines (at most {README_MAX_LINES}): "
                                       "move detail to the other pages")


@pytest.mark.parametrize("name, model, pattern, keys", [
    pytest.param("README.md", "sed", r"SED reaches an mIoU of at least\s+(\d+)\s+with every class at least\s+(\d+)",
                 ("mIoU", "class"), id="README-sed"),
    pytest.param("GETTING_STARTED.md", "sed",
                 r"\*\*mIoU of at least (\d+), every class at least (\d+)\*\*: the minimum of\s+(\d+)\s+runs",
                 ("mIoU", "class", "runs"), id="GETTING_STARTED-sed"),
    pytest.param("README.md", "eov_seg",
                 r"EOV-Seg a PQ of at least\s+(\d+),\s+an mIoU of at least\s+(\d+)\s+and every class at least\s+(\d+)",
                 ("PQ", "mIoU", "class"), id="README-eov_seg"),
    pytest.param("GETTING_STARTED.md", "eov_seg",
                 r"\*\*PQ of at least (\d+), an mIoU of at least (\d+), every class at least (\d+)\*\*: "
                 r"the minimum of\s+(\d+)\s+runs", ("PQ", "mIoU", "class", "runs"), id="GETTING_STARTED-eov_seg"),
])
def test_quick_start_promise_is_the_floor_of_its_runs(name, model, pattern, keys):
    """The figures a page promises for bash tools/quickstart.sh MODEL, against the runs behind them."""
    match = re.search(pattern, (ROOT / name).read_text())
    assert match, f"{name} no longer states the {model} quick start's promise as this test reads it"
    promise = quick_start_promise(model)
    assert [int(g) for g in match.groups()] == [promise[key] for key in keys]
