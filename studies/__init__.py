"""Studies: YAML files that name methods, a grid over each method's knobs and over the sampler, and an
image budget. ``debias-bench study NAME`` (or a path to a user's file) runs one; the engine is
:mod:`benchmark.study`. Like prompt sets, they are data found by name through :data:`STUDIES`."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def _shipped() -> dict[str, Traversable]:
    root = resources.files(__name__)
    files = (f for f in root.iterdir() if f.name.endswith(".yaml") and f.is_file())
    return {f.name.removesuffix(".yaml"): f for f in sorted(files, key=lambda f: f.name)}


STUDIES: dict[str, Traversable] = _shipped()

__all__ = ["STUDIES"]
