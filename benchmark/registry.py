"""Name → object registries with lazy imports, so a broken optional module never blocks the rest."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from benchmark.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a name to ``"module:attribute"`` and imports it on first use."""

    def __init__(self, kind: str, entries: dict[str, str] | None = None,
                 descriptions: dict[str, str] | None = None) -> None:
        self.kind = kind
        self._paths: dict[str, str] = dict(entries or {})
        self._loaded: dict[str, T] = {}
        # one line per name, for `debias-bench list` (readable without importing anything)
        self.descriptions: dict[str, str] = dict(descriptions or {})

    def register(self, name: str, target: str | T) -> None:
        if isinstance(target, str):
            self._paths[name] = target
        else:
            self._loaded[name] = target
            self._paths.setdefault(name, f"{target.__module__}:{getattr(target, '__qualname__', name)}")

    def names(self) -> list[str]:
        return sorted(self._paths)

    def in_order(self) -> list[str]:
        """Names in the order they were registered (the default run's order)."""
        return list(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        if name not in self._paths:
            known = ", ".join(self.names()) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}")
        if name not in self._loaded:
            module_name, _, attr = self._paths[name].partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._loaded[name] = obj
        return self._loaded[name]
