"""The submission's quality check run in a second process while the main one recomputes the fairness
records (``leaderboard add``): the check imports torch and open_clip and runs the world CLIP and the
classifiers on the thumbnails, the recompute is numpy, and on two cores each keeps one busy.

The outcome is the one :func:`leaderboard.quality_check.check_quality` gives in the main process: a
verdict, or the same one-line :class:`~benchmark.errors.DataError`. Anything else (the process could
not start, died, or raised another error) runs the check again in the main process, so a failure of
this speed-up can never accept or reject a bundle by itself.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.errors import DataError

log = logging.getLogger(__name__)

Checker = Callable[[Path, dict, Any, dict], Callable[[], Any]]  # start(...) -> wait() -> QualityVerdict


def in_process(root: Path, results: dict, pred: Any, manifest: dict) -> Callable[[], Any]:
    """The default: the check runs in this process when its result is asked for."""
    from leaderboard.quality_check import check_quality

    return lambda: check_quality(root, results, pred, manifest)


def _one_thread() -> None:
    """One thread for BLAS and torch here: the main process keeps the other core busy, and a second
    thread of each would spin against it (docs/performance.md has the measurement)."""
    import os

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # the BLAS numpy loaded to read the job's arrays
    os.environ["OMP_NUM_THREADS"] = "1"  # torch, imported later by the check, takes its threads from here


def _check(conn: Any, root: str, results: dict, pred: Any, manifest: dict) -> None:
    try:
        _one_thread()
        from leaderboard.quality_check import check_quality

        answer = ("ok", check_quality(Path(root), results, pred, manifest))
    except DataError as exc:
        answer = ("rejected", str(exc))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which checks again itself
        answer = ("error", f"{type(exc).__name__}: {exc}")
    try:
        conn.send(answer)
    except Exception:  # noqa: BLE001 - the parent sees no answer and checks again itself
        pass
    finally:
        conn.close()


def _end(process: Any, conn: Any) -> None:
    conn.close()
    if process.is_alive():
        process.terminate()
    process.join()


class QualityAhead:
    """``with QualityAhead() as ahead: validated(..., quality=ahead.start)``: each bundle's quality check
    runs in a spawned process from the moment its structure has passed until its result is asked for;
    the ``with`` ends every process it started."""

    def __init__(self) -> None:
        self.running: list[tuple[Any, Any]] = []  # (process, its pipe's end here)

    def start(self, root: Path, results: dict, pred: Any, manifest: dict) -> Callable[[], Any]:
        process = parent = child = None
        try:
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_check, args=(child, str(root), results, pred, manifest), daemon=True)
            process.start()
            child.close()
        except Exception as exc:  # noqa: BLE001 - e.g. no process can be started here: check in this one
            log.warning("not checking quality in a second process (%s)", exc)
            for end in (parent, child):
                if end is not None:
                    end.close()
            if process is not None and process.pid is not None:
                process.terminate()
                process.join()
            return in_process(root, results, pred, manifest)
        self.running.append((process, parent))

        def wait() -> Any:
            try:
                outcome, value = parent.recv()
            except Exception as exc:  # noqa: BLE001 - no answer (it died) or an unreadable one
                process.join(timeout=10)
                outcome, value = "error", f"no answer ({type(exc).__name__}; exit code {process.exitcode})"
            finally:
                self.running.remove((process, parent))
                _end(process, parent)
            if outcome == "ok":
                return value
            if outcome == "rejected":
                raise DataError(value)
            log.warning("the quality check in a second process failed (%s); checking here", value)
            return in_process(root, results, pred, manifest)()

        return wait

    def stop(self) -> None:
        while self.running:
            _end(*self.running.pop())

    def __enter__(self) -> QualityAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
