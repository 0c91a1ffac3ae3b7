"""Prompt sets: YAML data files, their loader and the registry of the sets shipped in this package.

>>> from prompts import load_prompt_set, list_prompt_sets
>>> ps = load_prompt_set("occupations")          # a registered name ...
>>> ps = load_prompt_set("my_sets/chefs.yaml")   # ... or a path to a user's file

The file schema and its validation live in ``prompts/schema.py``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from benchmark import yamlfile
from benchmark.errors import ConfigError, UnknownNameError
from prompts.schema import Prompt, PromptSet, parse_prompt_set, slugify

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "MAX_FILE_BYTES",
    "PROMPT_SETS",
    "Prompt",
    "PromptSet",
    "list_prompt_sets",
    "load_prompt_set",
    "parse_prompt_set",
    "slugify",
]

# Prompt files are short lists; a bigger file is a mistake (or an attempt to exhaust memory).
MAX_FILE_BYTES = 1_000_000


def _shipped() -> dict[str, Traversable]:
    # importlib.resources finds the files inside an installed wheel as well as in a source checkout.
    root = resources.files(__name__)
    files = (f for f in root.iterdir() if f.name.endswith(".yaml") and f.is_file())
    return {f.name.removesuffix(".yaml"): f for f in sorted(files, key=lambda f: f.name)}


PROMPT_SETS: dict[str, Traversable] = _shipped()


def list_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped in this package."""
    return sorted(PROMPT_SETS)


def load_prompt_set(name_or_path: str | Path) -> PromptSet:
    """Load and validate a prompt set given by registered name or by path to a ``.yaml`` file.

    A string is a path when it ends in ``.yaml``/``.yml`` or contains a directory separator.
    Raises ``UnknownNameError`` for an unknown name and ``ConfigError`` for a bad file.
    """
    if isinstance(name_or_path, str) and name_or_path in PROMPT_SETS:
        resource = PROMPT_SETS[name_or_path]
        return _load(resource, f"prompts/{resource.name}", name_or_path, Path(str(resource)))
    path = Path(name_or_path)
    if isinstance(name_or_path, Path) or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        if not path.is_file():
            raise ConfigError(f"{path}: prompt file not found")
        return _load(path, str(path), path.stem, path)
    known = ", ".join(list_prompt_sets()) or "none"
    raise UnknownNameError(f"unknown prompt set {name_or_path!r}; known: {known}")


def _load(source: Traversable | Path, label: str, stem: str, path: Path) -> PromptSet:
    with source.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{label}: file larger than {MAX_FILE_BYTES // 1_000_000} MB; a prompt file is a short list")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yamlfile.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context).split())
        raise ConfigError(f"{label}: {where}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise ConfigError(f"{label}: nested too deeply to be a prompt file") from None
    return parse_prompt_set(data, label, stem=stem, path=path)
