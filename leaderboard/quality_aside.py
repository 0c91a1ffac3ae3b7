"""A submission's quality check (FID, KID, CLIP scores, thumbnails: :func:`check_quality`) run in a
second process while this one recomputes the fairness numbers (``leaderboard add``, ``submit``): the
two are independent, and each keeps one core busy for seconds.

Only a speed-up. The verdict on the bundle is the same either way: a record the check refuses is
refused with the same line. If the second process fails for any other reason (it could not start, it
died), the check runs here instead; a rejected bundle stops it.
"""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.errors import DataError
from leaderboard.quality_check import QualityVerdict, check_quality

log = logging.getLogger(__name__)


def _work(conn: Any, root: str, results: dict, pred: pd.DataFrame, manifest: dict) -> None:
    try:
        conn.send(("verdict", check_quality(Path(root), results, pred, manifest)))
    except DataError as exc:
        conn.send(("refused", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - any other failure: the parent checks in-process
        conn.send(("failed", repr(exc)))
    finally:
        conn.close()


class QualityAside:
    """``aside = QualityAside(root, results, pred, manifest).start(); ...; aside.result()``;
    ``stop()`` (always, e.g. in a ``finally``) ends the process if it still runs."""

    def __init__(self, root: Path, results: dict, pred: pd.DataFrame, manifest: dict) -> None:
        self.args = (str(root), results, pred, manifest)
        self.process: Any = None
        self.conn: Any = None

    def start(self) -> QualityAside:
        try:
            ctx = multiprocessing.get_context("spawn")
            self.conn, child = ctx.Pipe(duplex=False)
            self.process = ctx.Process(target=_work, args=(child, *self.args), daemon=True)
            self.process.start()
            child.close()
        except Exception as exc:  # noqa: BLE001 - e.g. no process to spare: checked in-process
            log.warning("not checking quality in a second process (%s)", exc)
            self.process = None
        return self

    def result(self) -> QualityVerdict:
        """The verdict (raises :class:`DataError` for a refused record, as :func:`check_quality` does)."""
        outcome = None
        if self.process is not None:
            try:
                outcome = self.conn.recv()
            except (EOFError, OSError):
                outcome = None
            self.stop()
        if outcome is not None and outcome[0] == "verdict":
            return outcome[1]
        if outcome is not None and outcome[0] == "refused":
            raise DataError(outcome[1])
        if outcome is not None:
            log.warning("the quality check's second process failed (%s); checking here", outcome[1])
        root, results, pred, manifest = self.args
        return check_quality(Path(root), results, pred, manifest)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()
        self.conn.close()
        self.process = None
