"""The world's configuration: per content class, the training share of every attribute class.

A world config is a YAML file (``benchmark/world/config.yaml`` is the default world,
``config_alt.yaml`` a second bias setting). The shares written there are the *true bias* of each
plain prompt: a perfectly faithful generator reproduces them, and the benchmark measures how far
generated images (and debiasing methods) move away from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmark import yamlfile
from benchmark.errors import ConfigError, UnknownNameError
from benchmark.hashing import hash_value

WORLD_DIR = Path(__file__).resolve().parent
VARIANTS = {"default": WORLD_DIR / "config.yaml", "alt": WORLD_DIR / "config_alt.yaml"}
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass
class WorldConfig:
    """A validated world config; ``shares[content][attribute]`` is a probability vector."""

    name: str
    seed: int
    image_size: int
    images_per_class: int
    nontarget_images: int
    reference_images_per_class: int
    heldout_images_per_class: int
    attributes: dict[str, list[str]]
    shares: dict[str, dict[str, np.ndarray]]
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def contents(self) -> list[str]:
        return list(self.shares)

    def fingerprint(self) -> str:
        return hash_value(self.raw)


def _fail(path: Path | str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {msg}")


def load_world_config(path_or_variant: str | Path = "default") -> WorldConfig:
    """Read and check a world config; a variant name (``default``, ``alt``) or a YAML path."""
    if isinstance(path_or_variant, str) and path_or_variant in VARIANTS:
        path = VARIANTS[path_or_variant]
    else:
        path = Path(path_or_variant)
        if not path.suffix:
            raise UnknownNameError(f"unknown world variant {str(path_or_variant)!r}; known: {', '.join(VARIANTS)}")
    if not path.exists():
        raise ConfigError(f"{path}: world config not found")
    try:
        raw = yamlfile.load(path.read_text())
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise _fail(path, "must be a mapping")
    ints = ["seed", "image_size", "images_per_class", "nontarget_images", "reference_images_per_class",
            "heldout_images_per_class"]
    for key in ["name", "attributes", "classes", *ints]:
        if key not in raw:
            raise _fail(path, f"missing field {key!r}")
    for key in ints:
        if not isinstance(raw[key], int) or raw[key] < (0 if key == "seed" else 1):
            raise _fail(path, f"field {key!r} must be a positive integer, got {raw[key]!r}")
    if raw["image_size"] != 8:
        raise _fail(path, f"field 'image_size': only 8 is supported (the source glyphs are 8x8), got {raw['image_size']}")
    attributes = raw["attributes"]
    if not isinstance(attributes, dict) or not attributes:
        raise _fail(path, "field 'attributes' must map attribute names to class lists")
    attributes = {str(a): [str(c) for c in cs] for a, cs in attributes.items()}
    expected = {"color": ["red", "blue"], "shade": ["light", "mid", "dark"]}
    if attributes != expected:
        raise _fail(path, f"field 'attributes' must be {expected} (the renderer draws exactly these), got {attributes}")
    classes = raw["classes"]
    if not isinstance(classes, dict) or sorted(classes) != sorted(DIGITS):
        raise _fail(path, f"field 'classes' must list exactly the ten digits {DIGITS}")
    shares: dict[str, dict[str, np.ndarray]] = {}
    for content in DIGITS:
        entry = classes[content]
        if not isinstance(entry, dict) or sorted(entry) != sorted(attributes):
            raise _fail(path, f"classes.{content} must give shares for {sorted(attributes)}")
        shares[content] = {}
        for attr, labels in attributes.items():
            vec = np.asarray(entry[attr], dtype=float)
            if vec.shape != (len(labels),) or (vec < 0).any() or abs(vec.sum() - 1.0) > 1e-6:
                raise _fail(path, f"classes.{content}.{attr} must be {len(labels)} non-negative shares summing to 1, "
                                  f"got {entry[attr]!r}")
            shares[content][attr] = vec
    return WorldConfig(
        name=str(raw["name"]),
        seed=raw["seed"],
        image_size=raw["image_size"],
        images_per_class=raw["images_per_class"],
        nontarget_images=raw["nontarget_images"],
        reference_images_per_class=raw["reference_images_per_class"],
        heldout_images_per_class=raw["heldout_images_per_class"],
        attributes=attributes,
        shares=shares,
        path=path,
        raw=raw,
    )
