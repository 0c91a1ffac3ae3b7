"""What a study measures, at the bottom of the study modules (:mod:`benchmark.study` runs and summarises,
:mod:`benchmark.study_bootstrap` resamples): where the measure lives in a run's predictions, Pareto
dominance and the hypervolume a method's settings dominate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.config import BASELINE

FID_LIMIT = 1.5  # the hypervolume box reaches this multiple of the baseline's FID


def dominated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` is dominated by ``b`` (both minimised)."""
    return b[0] <= a[0] and b[1] <= a[1] and b != a



def front(points: list[tuple[float, float]]) -> list[bool]:
    """Which points are on the Pareto front (both coordinates minimised).

    >>> front([(0.3, 1.0), (0.1, 2.0), (0.2, 2.5)])
    [True, True, False]
    """
    return [not any(dominated(p, q) for q in points) for p in points]

def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Share of the box [0, ref_x] × [0, ref_y] dominated by ``points`` (both coordinates minimised).

    >>> hypervolume([(0.5, 0.5)], (1.0, 1.0))
    0.25
    >>> round(hypervolume([(0.5, 0.5), (0.25, 0.75)], (1.0, 1.0)), 4)
    0.3125
    >>> hypervolume([(2.0, 0.1)], (1.0, 1.0))
    0.0
    """
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    area, best_y = 0.0, reference[1]
    for i, (x, y) in enumerate(inside):
        best_y = min(best_y, y)
        right = inside[i + 1][0] if i + 1 < len(inside) else reference[0]
        area += (right - x) * (reference[1] - best_y)
    return area / (reference[0] * reference[1])


def hypervolume_members(here: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """The rows (of one sampler point) whose points make a method's hypervolume: its settings with an FID."""
    return [r for r in here if r["method"] == method and r["label"] != BASELINE and r["fid"] is not None]


@dataclass(frozen=True)
class MeasureColumns:
    """Where a study's measure lives in a run's ``predictions.parquet``: the soft FD of ``attribute`` by
    ``classifier`` on the run's first prompt set (the set whose records :func:`study_rows` reads), over
    the prompts that leave the attribute free, on the images the classifier sees a subject in."""

    prompt_set: str
    columns: list[str]  # "classifier/attribute/class", in the prompt set's class order
    subject: str  # "classifier/has_subject" (a predictions file without it keeps every image)
    free: frozenset[str]  # prompt ids that name no class of the attribute
    target: np.ndarray


def measure_columns(results: dict[str, Any], attribute: str, classifier: str) -> MeasureColumns:
    """:class:`MeasureColumns` of one run's ``results.json`` (uniform target when the set gives none)."""
    name, info = next(iter(results["prompt_sets"].items()))
    classes = info["classes"][attribute]
    target = (info.get("target") or {}).get(attribute)
    return MeasureColumns(
        name, [f"{classifier}/{attribute}/{c}" for c in classes], f"{classifier}/has_subject",
        frozenset(p["id"] for p in info["prompts"] if attribute not in (p.get("named") or {})),
        np.full(len(classes), 1.0 / len(classes)) if target is None else np.asarray(target, dtype=np.float64))
