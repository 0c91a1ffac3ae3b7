"""Study and per-method figures drawn once per content: a JSON file beside the page maps a hash of what a
figure set is drawn from (and of the drawing code) to the drawn images, so rebuilding the page after an
unrelated change (a new entry, a new table) does not redraw them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.hashing import hash_file, hash_value

_CODE = [Path(__file__).with_name(n) for n in ("studies.py", "method_fronts.py")]


class FigureMemo:
    """``get(parts, draw)``: the figures drawn from ``parts``, from the file when drawn before, else
    ``draw()``; ``save()`` keeps only the figure sets used since loading (atomic write)."""

    def __init__(self, path: Path | None, before_draw: Callable[[], None] = lambda: None) -> None:
        self.path = path
        self.before_draw = before_draw  # e.g. set the plotting style, only when something is drawn
        self.code = hash_value([hash_file(p) for p in _CODE])
        self.stored: dict[str, Any] = {}
        self.used: dict[str, Any] = {}
        if path is not None and path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                self.stored = stored if isinstance(stored, dict) else {}
            except (OSError, ValueError):
                self.stored = {}  # an unreadable memo is redrawn

    def get(self, parts: Any, draw: Callable[[], list[dict[str, str]]]) -> list[dict[str, str]]:
        key = hash_value({"parts": json.loads(json.dumps(parts, default=str)), "code": self.code})
        figures = self.stored.get(key)
        if not isinstance(figures, list):
            self.before_draw()
            figures = draw()
        self.used[key] = figures
        return figures

    def save(self) -> None:
        if self.path is None or self.used == self.stored:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.used), encoding="utf-8")
        tmp.replace(self.path)
