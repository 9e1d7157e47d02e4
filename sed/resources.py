"""Data files shipped inside the ``sed`` package, and how config values that name files are read.

The package ships its vocabularies (``sed/vocabularies/**.json``), the reference tables of the
dataset conversions (``sed/reference/*``) and the open_clip model configs
(``sed/model_configs/*.json``). They are found through ``importlib.resources``, never through
the repository layout, so an installed wheel finds them wherever it is imported from. The
package is not zip-safe (``setup.py`` says ``zip_safe=False``): the files are read as ordinary
paths on disk.
"""
import os
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import List

# Folders inside the package.
VOCABULARY_FOLDER = "vocabularies"
REFERENCE_FOLDER = "reference"
# The prefixes of the file paths the authors' configs use, relative to the repository root:
# ``datasets/<x>`` named a vocabulary, ``sed/<x>`` a file of the package.
CONFIG_VOCABULARY_PREFIX = "datasets"
CONFIG_PACKAGE_PREFIX = "sed"
# How a relative file path of a config is read, for error messages.
RELATIVE_PATHS_NOTE = ("relative paths are read from the working directory, else as the package's files: "
                       f"{CONFIG_VOCABULARY_PREFIX}/<name> is sed/{VOCABULARY_FOLDER}/<name>, "
                       f"{CONFIG_PACKAGE_PREFIX}/<path> is sed/<path>")


def package_root() -> Path:
    """The installed ``sed`` package folder."""
    # A regular (non-zip) install: the Traversable is a concrete path.
    return Path(str(files(__package__)))


def _packaged_files(folder: str, pattern: str) -> List[str]:
    """Paths (POSIX, relative to ``sed/<folder>``) of the packaged files matching ``pattern``."""
    root = package_root() / folder
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(pattern) if p.is_file())


def packaged_vocabularies() -> List[str]:
    """Relative names of the packaged vocabularies, e.g. ``["ade150.json", ..., "eov_seg/ade20k_150.json"]``."""
    return _packaged_files(VOCABULARY_FOLDER, "*.json")


def packaged_references() -> List[str]:
    """Names of the packaged reference tables, e.g. ``["ade847_categories.json", ...]``."""
    return _packaged_files(REFERENCE_FOLDER, "*")


def _packaged_file(folder: str, relative: str, what: str, available: List[str]) -> Path:
    """``sed/<folder>/<relative>``, or FileNotFoundError listing ``available`` if it is not a file."""
    parts = PurePosixPath(relative.replace(os.sep, "/")).parts
    # Refuse names that would leave the folder (absolute, "..").
    if parts and not PurePosixPath(relative).is_absolute() and ".." not in parts:
        path = package_root().joinpath(folder, *parts)
        if path.is_file():
            return path
    raise FileNotFoundError(f"No packaged {what} {relative!r} in {package_root() / folder}; "
                            f"packaged: {', '.join(available)}")


def vocabulary_path(relative: str) -> Path:
    """The packaged vocabulary file ``relative`` (POSIX path below ``sed/vocabularies``), e.g.
    ``vocabulary_path("ade150.json")`` or ``vocabulary_path("eov_seg/ade20k_150.json")``.

    Raises FileNotFoundError, naming the packaged vocabularies, if there is no such file.
    """
    return _packaged_file(VOCABULARY_FOLDER, relative, "vocabulary", packaged_vocabularies())


def reference_path(name: str) -> Path:
    """The packaged reference table ``name`` of the dataset conversions (below ``sed/reference``),
    e.g. ``reference_path("pascalcontext_val.txt")``.

    Raises FileNotFoundError, naming the packaged tables, if there is no such file.
    """
    return _packaged_file(REFERENCE_FOLDER, name, "reference table", packaged_references())


def resolve_data_file(value: str) -> str:
    """The file a config's file value (a vocabulary JSON, an open_clip model-config JSON) names.

    An empty value, an absolute path or a path that exists relative to the working directory is
    returned as given. Otherwise a path of the form the authors' configs use resolves to the
    packaged file when there is one: ``datasets/<x>`` to the vocabulary ``<x>``, ``sed/<x>`` to
    ``sed/<x>`` in the installed package. Anything else is returned unchanged, so that the
    reader's own "does not exist" error names the value (see ``RELATIVE_PATHS_NOTE``).
    """
    if not value or os.path.isabs(value) or os.path.exists(value):
        return value
    parts = PurePosixPath(value.replace(os.sep, "/")).parts
    if len(parts) < 2 or ".." in parts:
        return value
    prefix, rest = parts[0], parts[1:]
    if prefix == CONFIG_VOCABULARY_PREFIX:
        candidate = package_root().joinpath(VOCABULARY_FOLDER, *rest)
    elif prefix == CONFIG_PACKAGE_PREFIX:
        candidate = package_root().joinpath(*rest)
    else:
        return value
    return str(candidate) if candidate.is_file() else value
