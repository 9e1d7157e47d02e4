"""What the command-line tools share: an argument parser with ``--debug``, :func:`run_cli`,
which turns the errors a user can act on into one line (``TOOL: error: MESSAGE``) with exit
status 2 (the command line is wrong) or 1 (something failed while running), the numeric
argument types that refuse out-of-range values at parse time, and the output-path checks a
tool runs before it builds a model.
"""
import argparse
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional, Sequence

from sed.checkpoint import CheckpointError
from sed.export import ExportError

# The errors a user can act on from their message alone. ValueError covers the config's
# ConfigError and the custom datasets' CustomDatasetError; OSError missing inputs and outputs
# that cannot be written; CheckpointError weights that cannot serve the model; ExportError an
# operator that does not export (both RuntimeErrors, as are many bugs: those keep their
# traceback, as does any other exception).
EXPECTED_ERRORS = (ValueError, OSError, CheckpointError, ExportError)

USAGE_STATUS = 2  # argparse's own for a wrong command line
FAILURE_STATUS = 1


class UsageError(Exception):
    """The command line is wrong in a way argparse cannot see (a combination of options, a
    vocabulary, an output path): reported like argparse's errors, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with the tools' ``--debug`` option and their help layout (the module
    docstring as written)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)
        self.add_argument("--debug", action="store_true",
                          help="on an error, also print the full traceback (give it before --opts)")


def describe(error: BaseException) -> str:
    """The message of ``error`` for a user: "FILE: reason" for an OSError from the system
    (rather than "[Errno 2] No such file or directory: 'FILE'"), else its text."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror if error.filename is None else f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


def run_cli(parser: ArgumentParser, body: Callable[[argparse.Namespace], int],
            argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` with ``parser`` and return ``body(args)``'s exit status; a
    :class:`UsageError` or one of ``EXPECTED_ERRORS`` is printed to stderr as
    ``PROG: error: MESSAGE`` and gives status 2 or 1 (with ``--debug`` after the traceback).
    Other exceptions propagate with their traceback."""
    args = parser.parse_args(argv)
    try:
        return body(args)
    except (UsageError, *EXPECTED_ERRORS) as error:
        if args.debug:
            traceback.print_exc()
        print(f"{parser.prog}: error: {describe(error)}", file=sys.stderr)
        return USAGE_STATUS if isinstance(error, UsageError) else FAILURE_STATUS


@contextmanager
def usage_errors():
    """Errors inside are errors of the command line (a value read from a file an argument names,
    such as a vocabulary): ValueError and FileNotFoundError become :class:`UsageError`."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(describe(error)) from error


def _int_type(minimum: int, maximum: Optional[int], wanted: str) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum] (no upper bound: None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {value}")
        return value

    return parse


positive_int = _int_type(1, None, "a positive integer")
non_negative_int = _int_type(0, None, "an integer of 0 or more")
port = _int_type(1, 65535, "a port number from 1 to 65535")


def probability(text: str) -> float:
    """An argparse type: a number in [0, 1] (a score threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {text!r}") from None
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {text}")
    return value


def _check_writable(folder: Path, problem: str) -> None:
    # os.access, not a probe file: nothing is left behind. It says yes to root in a folder
    # without write permission (root writes there all the same), no on a read-only mount.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{problem} (permission denied or a read-only file system)")


def _make_folder(folder: Path, option: str, path: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # the folder itself, or one above it, is a file
        problem = f"cannot create the folder {folder}: it or a folder above it is a file"
        raise UsageError(f"{option} {path}: {problem}") from None
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot create the folder ({describe(error)})") from None


def output_folder(path: str, option: str = "--output") -> Path:
    """The folder ``path`` an option names for a tool's outputs, created if missing; a
    :class:`UsageError` if it is a file or cannot be written, before any work is done."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {path} is a file: give a folder (it is created if missing)")
    _make_folder(folder, option, path)
    _check_writable(folder, f"{option} {path}: cannot write in this folder")
    return folder


def output_file(path: str, option: str) -> Path:
    """The file ``path`` an option names, its folder created if missing; a :class:`UsageError`
    if it is a folder or cannot be written, before any work is done."""
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"{option} {path} is a folder: give a file name (e.g. {file / 'NAME'})")
    _make_folder(file.parent, option, path)
    _check_writable(file.parent, f"{option} {path}: cannot write in its folder {file.parent}")
    if file.exists() and not os.access(file, os.W_OK):
        raise UsageError(f"{option} {path}: the file exists and cannot be overwritten (permission denied)")
    return file
