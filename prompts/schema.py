"""Prompt-set dataclasses and the validation that turns a parsed YAML mapping into a ``PromptSet``.

A prompt file is data (lm-evaluation-harness style). Every mistake in it is reported as one line,
``<file>: <field>: <problem>``, e.g. ``prompts/x.yaml: prompts[3].id: duplicate id 'nurse'``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from benchmark.errors import ConfigError
from benchmark.hashing import hash_value

# Ids, attribute names and class labels become cache keys, parquet columns and file names.
SLUG_RE = re.compile(r"[a-z0-9_-]{1,80}")
TARGET_TOLERANCE = 1e-6
DEFAULT_IMAGES_PER_PROMPT = 100

REQUIRED_FIELDS = ("name", "description", "source", "attributes", "classes")
MAX_IMAGES_PER_PROMPT = 1_000_000  # the run config's bound too

OPTIONAL_FIELDS = ("target", "images_per_prompt", "templates", "prompts", "template", "items")
PROMPT_FIELDS = ("id", "text", "named")


@dataclass(frozen=True)
class Prompt:
    """One prompt. ``named`` maps an attribute to the class the text names (conditional prompts)."""

    id: str
    text: str
    named: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PromptSet:
    """A validated prompt set; ``target[a]`` is aligned with ``classes[a]`` and sums to 1."""

    name: str
    description: str
    source: str
    attributes: list[str]
    classes: dict[str, list[str]]
    target: dict[str, np.ndarray]
    images_per_prompt: int
    templates: dict[str, dict[str, str]]
    prompts: list[Prompt]
    path: Path | None = None
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        # Description and source are prose; editing them must not invalidate cached images or scores.
        content = {k: v for k, v in self.to_dict().items() if k not in ("description", "source")}
        object.__setattr__(self, "fingerprint", hash_value(content))

    def __len__(self) -> int:
        return len(self.prompts)

    def to_dict(self) -> dict[str, Any]:
        """The resolved content in explicit form (no template/items); loading it gives the same set."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "attributes": list(self.attributes),
            "classes": {a: list(c) for a, c in self.classes.items()},
            "target": {a: dict(zip(self.classes[a], map(float, t), strict=True)) for a, t in self.target.items()},
            "images_per_prompt": self.images_per_prompt,
            "templates": {a: dict(t) for a, t in self.templates.items()},
            "prompts": [
                {"id": p.id, "text": p.text, **({"named": dict(p.named)} if p.named else {})} for p in self.prompts
            ],
        }


def slugify(text: str) -> str:
    """``"Police Officer"`` → ``"police-officer"``: lower-case ASCII letters, digits and dashes."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


class _Checker:
    """Raises one-line ``ConfigError``s that start with the file label and the field path."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, where: str, problem: str) -> NoReturn:
        message = f"{self.label}: {where}: {problem}" if where else f"{self.label}: {problem}"
        raise ConfigError(" ".join(message.split()))

    def mapping(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {_kind(value)}")
        return value

    def list(self, value: Any, where: str, min_len: int = 1) -> list:
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {_kind(value)}")
        if len(value) < min_len:
            self.fail(where, "empty list" if not value else f"needs at least {min_len} entries, got {len(value)}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            self.fail(where, f"expected a string, got {_kind(value)}")
        if not value.strip():
            self.fail(where, "empty string")
        if "\n" in value.strip():
            self.fail(where, "must be one line")
        return value

    def slug(self, value: Any, where: str, what: str) -> str:
        self.text(value, where)
        if not SLUG_RE.fullmatch(value):
            self.fail(where, f"{what} {value!r} is not slug-safe (use 1-80 of a-z, 0-9, '_', '-')")
        return value

    def unique_slugs(self, value: Any, where: str, what: str, min_len: int) -> list[str]:
        items = self.list(value, where, min_len)
        seen: set[str] = set()
        for i, item in enumerate(items):
            self.slug(item, f"{where}[{i}]", what)
            if item in seen:
                self.fail(f"{where}[{i}]", f"duplicate {what} {item!r}")
            seen.add(item)
        return items

    def known(self, key: Any, allowed: list[str], where: str, what: str) -> str:
        if key not in allowed:
            self.fail(where, f"unknown {what} {key!r}; known: {', '.join(allowed)}")
        return key


def parse_prompt_set(data: Any, label: str, stem: str | None = None, path: Path | None = None) -> PromptSet:
    """Validate a parsed YAML document and resolve it into a ``PromptSet``.

    ``label`` names the file in error messages; ``stem`` (the file name without suffix) must equal
    the set's ``name`` when given.
    """
    c = _Checker(label)
    if data is None:
        c.fail("", "file is empty; expected a mapping with name, attributes, classes and prompts")
    c.mapping(data, "top level")
    allowed = REQUIRED_FIELDS + OPTIONAL_FIELDS
    for key in data:
        if key not in allowed:
            c.fail(str(key), f"unknown field; allowed: {', '.join(allowed)}")
    for key in REQUIRED_FIELDS:
        if key not in data:
            c.fail(key, "missing required field")

    name = c.slug(data["name"], "name", "name")
    if stem is not None and name != stem:
        c.fail("name", f"{name!r} does not match the file name {stem!r}")
    description = c.text(data["description"], "description")
    source = c.text(data["source"], "source")
    attributes = c.unique_slugs(data["attributes"], "attributes", "attribute", min_len=1)

    classes_raw = c.mapping(data["classes"], "classes")
    for key in classes_raw:
        c.known(key, attributes, f"classes.{key}", "attribute")
    classes: dict[str, list[str]] = {}
    for attr in attributes:
        if attr not in classes_raw:
            c.fail(f"classes.{attr}", "missing (every attribute needs its class labels)")
        classes[attr] = list(c.unique_slugs(classes_raw[attr], f"classes.{attr}", "class", min_len=2))

    target = {a: np.full(len(k), 1.0 / len(k)) for a, k in classes.items()}
    for attr, dist in c.mapping(data.get("target", {}), "target").items():
        c.known(attr, attributes, f"target.{attr}", "attribute")
        target[attr] = _target(c, dist, classes[attr], f"target.{attr}")

    images_per_prompt = data.get("images_per_prompt", DEFAULT_IMAGES_PER_PROMPT)
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        c.fail("images_per_prompt", f"expected a positive integer, got {images_per_prompt!r}")
    if images_per_prompt > MAX_IMAGES_PER_PROMPT:
        c.fail("images_per_prompt", f"{images_per_prompt} is more than {MAX_IMAGES_PER_PROMPT:,} images per prompt")

    templates: dict[str, dict[str, str]] = {}
    for attr, per_class in c.mapping(data.get("templates", {}), "templates").items():
        c.known(attr, attributes, f"templates.{attr}", "attribute")
        per_class = c.mapping(per_class, f"templates.{attr}")
        for cls, text in per_class.items():
            c.known(cls, classes[attr], f"templates.{attr}.{cls}", "class")
            c.text(text, f"templates.{attr}.{cls}")
        missing = [k for k in classes[attr] if k not in per_class]
        if missing:
            c.fail(f"templates.{attr}", f"missing classes: {', '.join(missing)}")
        templates[attr] = {k: per_class[k] for k in classes[attr]}

    prompts = _prompts(c, data, classes)
    return PromptSet(
        name=name,
        description=description,
        source=source,
        attributes=list(attributes),
        classes=classes,
        target=target,
        images_per_prompt=images_per_prompt,
        templates=templates,
        prompts=prompts,
        path=path,
    )


def _target(c: _Checker, dist: Any, labels: list[str], where: str) -> np.ndarray:
    dist = c.mapping(dist, where)
    out = np.zeros(len(labels))
    for cls, p in dist.items():
        c.known(cls, labels, f"{where}.{cls}", "class")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
            c.fail(f"{where}.{cls}", f"expected a finite number, got {p!r}")
        if p < 0:
            c.fail(f"{where}.{cls}", f"negative probability {p!r}")
        out[labels.index(cls)] = float(p)
    if abs(out.sum() - 1.0) > TARGET_TOLERANCE:
        c.fail(where, f"probabilities sum to {out.sum():.6g}, expected 1 (tolerance {TARGET_TOLERANCE:g})")
    return out


def _prompts(c: _Checker, data: dict, classes: dict[str, list[str]]) -> list[Prompt]:
    """Explicit ``prompts`` first, then ``template`` × ``items``; ids are unique across both."""
    has_template, has_items = "template" in data, "items" in data
    if has_template != has_items:
        c.fail("template" if has_template else "items", "template and items must be given together")
    if "prompts" not in data and not has_template:
        c.fail("prompts", "missing; give prompts, or template and items")

    prompts: list[Prompt] = []
    seen: set[str] = set()

    def add(prompt: Prompt, where: str) -> None:
        if prompt.id in seen:
            c.fail(where, f"duplicate id {prompt.id!r}")
        seen.add(prompt.id)
        prompts.append(prompt)

    if "prompts" in data:
        for i, entry in enumerate(c.list(data["prompts"], "prompts")):
            where = f"prompts[{i}]"
            entry = c.mapping(entry, where)
            for key in entry:
                if key not in PROMPT_FIELDS:
                    c.fail(f"{where}.{key}", f"unknown field; allowed: {', '.join(PROMPT_FIELDS)}")
            for key in ("id", "text"):
                if key not in entry:
                    c.fail(f"{where}.{key}", "missing required field")
            pid = c.slug(entry["id"], f"{where}.id", "id")
            text = c.text(entry["text"], f"{where}.text")
            named = {}
            for attr, cls in c.mapping(entry.get("named", {}), f"{where}.named").items():
                c.known(attr, list(classes), f"{where}.named.{attr}", "attribute")
                c.known(cls, classes[attr], f"{where}.named.{attr}", "class")
                named[attr] = cls
            add(Prompt(pid, text, named), f"{where}.id")

    if has_template:
        template = c.text(data["template"], "template")
        if template.count("{}") != 1:
            c.fail("template", f"must contain '{{}}' exactly once, got {template!r}")
        for i, item in enumerate(c.list(data["items"], "items")):
            c.text(item, f"items[{i}]")
            pid = slugify(item)
            if not SLUG_RE.fullmatch(pid):
                c.fail(f"items[{i}]", f"item {item!r} gives no usable id (slug {pid!r})")
            add(Prompt(pid, template.replace("{}", item.strip())), f"items[{i}]")
    return prompts
