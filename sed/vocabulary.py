"""Vocabulary files: JSON lists of classes, in class order, shared by every model.

An entry is a class name (a string; ", " separates synonyms) or an object
``{"name": "cat, kitten", "isthing": true}`` that also says whether the class is a thing
(countable instances) or stuff; a plain string is stuff.
"""
import json
import os
from dataclasses import dataclass
from typing import List, Tuple

from .resources import RELATIVE_PATHS_NOTE, resolve_data_file


@dataclass(frozen=True)
class Vocabulary:
    names: Tuple[str, ...]  # one entry per class, synonyms included
    isthing: Tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.names)


def parse_vocabulary(entries, source: str = "the vocabulary") -> Vocabulary:
    """Vocabulary from a list of strings and/or ``{"name", "isthing"}`` objects."""
    if not isinstance(entries, list):
        raise ValueError(f"{source} must be a JSON list of class names or {{'name', 'isthing'}} objects")
    names, isthing = [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            names.append(entry["name"])
            isthing.append(bool(entry.get("isthing", False)))
        elif isinstance(entry, str):
            names.append(entry)
            isthing.append(False)
        else:
            raise ValueError(f"{source}, entry {i}: {entry!r} is neither a class name nor an object "
                             "with a string 'name' (and an optional boolean 'isthing')")
    return Vocabulary(tuple(names), tuple(isthing))


def load_vocabulary(path: str) -> Vocabulary:
    """Read a vocabulary file (names are kept byte for byte). ``path`` is a config's file value,
    read as ``sed.resources.resolve_data_file`` says (``datasets/ade150.json`` is the packaged
    vocabulary unless the working directory has that file)."""
    resolved = resolve_data_file(path)
    if not os.path.isfile(resolved):
        raise FileNotFoundError(f"Vocabulary file {path!r} does not exist ({RELATIVE_PATHS_NOTE})")
    with open(resolved, encoding="utf-8") as f:
        entries = json.load(f)
    return parse_vocabulary(entries, source=repr(path))


def load_class_names(path: str) -> List[str]:
    """The class names of a vocabulary file, in class order."""
    return list(load_vocabulary(path).names)
