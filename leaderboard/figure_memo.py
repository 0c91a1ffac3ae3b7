"""Study and per-method figures drawn once per content: a JSON file beside the page maps a hash of what a
figure set is drawn from (and of the drawing code) to the drawn images, so rebuilding the page after an
unrelated change (a new entry, a new table) does not redraw them. The per-method views are kept the
same way: building them reads every method's defaults, which imports the methods and torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.hashing import hash_file, hash_value

_CODE = [*(Path(__file__).with_name(n) for n in ("studies.py", "method_fronts.py")),
         Path(__file__).resolve().parents[1] / "benchmark" / "study_fronts.py"]


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

    def get(self, parts: Any, draw: Callable[[], Any], kind: type = list) -> Any:
        """What ``draw()`` made from ``parts`` (a list of figures, or another JSON value of type ``kind``)."""
        key = hash_value({"parts": json.loads(json.dumps(parts, default=str)), "code": self.code})
        made = self.stored.get(key)
        if not isinstance(made, kind):
            self.before_draw()
            made = json.loads(json.dumps(draw()))  # as it will read back from the file
        self.used[key] = made
        return made

    def save(self) -> None:
        if self.path is None or self.used == self.stored:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.used), encoding="utf-8")
        tmp.replace(self.path)
