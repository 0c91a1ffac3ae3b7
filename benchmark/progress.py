"""Progress bars for long work: methods' training and sample recording, and scoring.

Every training loop shows a bar with its step, its loss and an ETA, so nothing long is silent. The
runner turns the bars off with the rest of its progress output (``--quiet``).
"""

from __future__ import annotations

from tqdm.auto import tqdm

_enabled = True


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = bool(enabled)


def bar(total: int, desc: str, unit: str = "step") -> tqdm:
    """A bar for ``total`` steps of ``desc``; update it with ``.update(1)`` and ``.set_postfix(loss=...)``."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not _enabled, mininterval=0.5)
