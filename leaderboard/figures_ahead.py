"""The page's figures for a leaderboard with a new entry, drawn in a second process while the entry's
numbers are re-verified (``leaderboard add``): both take seconds and each keeps one core busy.

The drawing starts once the bundle's files, schema and predictions have passed (never on a file that
failed them), on a private copy of what the figures are drawn from. It writes the page's figure memo
(``.figures.json``), which is keyed by that content: the page built after a successful add finds its
figures there, and anything that does not match (or a drawing that failed) is simply drawn again.
A rejected bundle stops the drawing and leaves the leaderboard untouched.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import tempfile
from pathlib import Path
from typing import Any

from leaderboard.rundir import PREDICTIONS_FILE, RESULTS_FILE

log = logging.getLogger(__name__)


def _draw(entries: str, out: str) -> None:
    from leaderboard.html import FIGURE_CACHE, draw_figures

    draw_figures(entries, Path(out) / FIGURE_CACHE)


class FiguresAhead:
    """``with FiguresAhead(entries, out) as ahead: add_entry(..., on_checked=ahead.start); ahead.finish()``"""

    def __init__(self, entries_dir: str | Path, out_dir: str | Path) -> None:
        self.entries_dir, self.out_dir = Path(entries_dir), Path(out_dir)
        self.tmp: Path | None = None
        self.process: Any = None

    def start(self, root: Path, results: dict, manifest: dict) -> None:
        """The ``on_checked`` hook: copy the new entry's results and predictions beside links to the
        existing entries, and draw the page for that set in a spawned process. Only a speed-up: any
        failure here is logged and the add goes on (the page then draws its figures itself)."""
        try:
            self._start(root, results, manifest)
        except Exception as exc:  # noqa: BLE001 - e.g. no symlinks or a full disk: the page draws them later
            log.warning("not drawing the figures ahead (%s)", exc)
            self.process = None

    def _start(self, root: Path, results: dict, manifest: dict) -> None:
        from leaderboard.submission import ENTRY_TEXT, entry_dirs

        self.tmp = Path(tempfile.mkdtemp(prefix="debias-bench-figures-"))
        entries = self.tmp / "entries"
        new = entries / str(results["run_id"])
        new.mkdir(parents=True)
        for name in (RESULTS_FILE, PREDICTIONS_FILE):
            shutil.copyfile(root / name, new / name)
        text = {k: manifest[k] for k in ENTRY_TEXT if manifest.get(k) is not None}
        (new / "entry.json").write_text(json.dumps(text), encoding="utf-8")  # the label names the entry
        for d in entry_dirs(self.entries_dir):
            if d.name != new.name:  # a duplicate run id is rejected by the check that follows
                (entries / d.name).symlink_to(d.resolve(), target_is_directory=True)
        self.process = multiprocessing.get_context("spawn").Process(
            target=_draw, args=(str(entries), str(self.tmp / "site")), daemon=True)
        self.process.start()

    def finish(self) -> None:
        """Wait for the drawing and put its figure memo where the page will look for it."""
        if self.process is None or self.tmp is None:
            return
        self.process.join()
        if self.process.exitcode != 0:
            log.warning("drawing the figures ahead failed (exit %s); the page draws them", self.process.exitcode)
            return
        from leaderboard.html import FIGURE_CACHE

        drawn = self.tmp / "site" / FIGURE_CACHE
        if drawn.is_file():
            self.out_dir.mkdir(parents=True, exist_ok=True)
            staged = self.out_dir / f"{FIGURE_CACHE}.ahead"
            shutil.copyfile(drawn, staged)
            staged.replace(self.out_dir / FIGURE_CACHE)

    def __enter__(self) -> FiguresAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
