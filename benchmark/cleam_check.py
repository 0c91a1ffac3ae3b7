"""How far a classifier's CLEAM correction can be trusted on a run: ``debias-bench cleam-check RUN``.

CLEAM (``benchmark.metrics.cleam``) assumes the classifier errs on the measured images as it did on
the images its confusion matrix was measured on. This check tests that on a run where a second,
stronger classifier labelled the same images: its argmax is taken as the label. For every attribute
both classify and every (method, prompt) cell that leaves the attribute open, it compares the weak
classifier's FD with the strong one's, uncorrected and corrected with three kinds of matrix:

* ``shipped``: the run's own ``*-cleam`` records (the matrices the classifier ships with);
* ``baseline images``: matrices measured on the run's baseline images of the same content;
* ``own images``: matrices measured on the evaluated method's own images of the same content.

The last two are cross-fitted: the cell's even-indexed images are corrected with a matrix measured on
odd-indexed images and back, so no image calibrates its own correction. A content is the one class of
the classifier's per-content measurements that the prompt names (``cleam.content_of``); prompts that
name none share one matrix. Each row counts the cells whose corrected FD is closer to the strong FD
than the uncorrected one, and the mean absolute difference from the strong FD before and after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.errors import DataError
from benchmark.metrics.cleam import confusion_matrix, content_of, corrected_distribution
from benchmark.metrics.fairness import fairness_discrepancy

CALIBRATIONS = ("shipped", "baseline images", "own images")


@dataclass(frozen=True)
class Row:
    attribute: str
    variant: str  # hard-cleam or soft-cleam
    calibration: str
    closer: int
    cells: int
    error_uncorrected: float
    error_corrected: float


def _cells(results: dict[str, Any], pred: pd.DataFrame, weak: str, strong: str, attr: str) -> list[dict[str, Any]]:
    """Each (method, prompt set, prompt) cell that leaves ``attr`` open, with its images' rows."""
    out = []
    for ps, info in results["prompt_sets"].items():
        classes = (info.get("classes") or {}).get(attr)
        if not classes:
            continue
        target = _target(info, attr, classes)
        texts = {p["id"]: p["text"] for p in info["prompts"] if attr not in (p.get("named") or {})}
        rows = pred[(pred["prompt_set"] == ps) & pred["prompt_id"].isin(texts)]
        for (method, pid), g in rows.groupby(["method", "prompt_id"], sort=True):
            out.append({"method": method, "prompt_set": ps, "prompt_id": pid, "text": texts[pid], "rows": g,
                        "classes": classes, "target": target})
    return out


def _target(info: dict[str, Any], attr: str, classes: list[str]) -> np.ndarray:
    """The prompt set's target for ``attr`` as results.json records it (class → share), else uniform."""
    given = (info.get("target") or {}).get(attr)
    if isinstance(given, dict):
        return np.asarray([float(given[c]) for c in classes])
    return np.full(len(classes), 1.0 / len(classes))


def _columns(name: str, attr: str, classes: list[str]) -> list[str]:
    return [f"{name}/{attr}/{c}" for c in classes]


def _shares(probs: np.ndarray, hard: bool) -> np.ndarray:
    return np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]) / len(probs) if hard else probs.mean(axis=0)


def _matrix(rows: pd.DataFrame, weak: str, strong: str, attr: str, classes: list[str], hard: bool) -> np.ndarray | None:
    labels = rows[_columns(strong, attr, classes)].to_numpy().argmax(axis=1)
    if len(rows) == 0 or (np.bincount(labels, minlength=len(classes)) == 0).any():
        return None  # a class with no labelled image: no matrix (the cell stays uncorrected)
    return confusion_matrix(labels, rows[_columns(weak, attr, classes)].to_numpy(), hard=hard)


def check(run_dir: str | Path, weak: str, strong: str) -> list[Row]:
    run_dir = Path(run_dir)
    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        pred = pd.read_parquet(run_dir / "predictions.parquet")
    except (OSError, ValueError) as exc:
        raise DataError(f"{run_dir}: not a run folder with results.json and predictions.parquet ({exc})") from None
    models = results.get("models", {}).get("classifiers", {})
    for name in (weak, strong):
        if name not in models:
            raise DataError(f"cleam-check: the run has no classifier {name!r} (it has {sorted(models)})")
    attributes = [a for a in models[weak].get("attributes", []) if a in models[strong].get("attributes", [])]
    if not attributes:
        raise DataError(f"cleam-check: {weak!r} and {strong!r} classify no attribute in common")
    contents = sorted((models[weak].get("accuracy_by_content") or {}).get(attributes[0], {}))
    baseline = results.get("config", {}).get("baseline", "baseline")
    pred = pred.assign(content=pred["prompt"].map(lambda t: content_of(str(t), contents) or ""),
                       fold=pred["index"].astype(int) % 2)
    records = {(r["method"], r["prompt_set"], r["prompt_id"], r["classifier"], r["attribute"], r["variant"]): r["value"]
               for r in results["metrics"] if r.get("metric") == "fd" and r.get("prompt_id") is not None}
    rows = []
    for attr in attributes:
        cells = _cells(results, pred, weak, strong, attr)
        for hard in (True, False):
            variant = "hard-cleam" if hard else "soft-cleam"
            tally = {c: [0, 0, [], []] for c in CALIBRATIONS}
            for cell in cells:
                g, classes, target = cell["rows"], cell["classes"], cell["target"]
                truth = fairness_discrepancy(_shares(g[_columns(strong, attr, classes)].to_numpy(), True), target)
                raw = fairness_discrepancy(_shares(g[_columns(weak, attr, classes)].to_numpy(), hard), target)
                estimates = {"shipped": records.get((cell["method"], cell["prompt_set"], cell["prompt_id"], weak, attr, variant))}
                for calibration, source in (("baseline images", baseline), ("own images", cell["method"])):
                    pool = pred[(pred["method"] == source) & (pred["prompt_set"] == cell["prompt_set"])
                                & (pred["content"] == g["content"].iloc[0])]
                    halves = []
                    for fold in (0, 1):
                        matrix = _matrix(pool[pool["fold"] != fold], weak, strong, attr, classes, hard)
                        part = g[g["fold"] == fold]
                        if matrix is None or part.empty:
                            halves = []
                            break
                        halves.append((len(part), corrected_distribution(
                            _shares(part[_columns(weak, attr, classes)].to_numpy(), hard), matrix)))
                    estimates[calibration] = None if not halves else fairness_discrepancy(
                        sum(n * s for n, s in halves) / sum(n for n, _ in halves), target)
                for calibration, value in estimates.items():
                    if value is None:
                        continue
                    t = tally[calibration]
                    t[0] += abs(value - truth) < abs(raw - truth)
                    t[1] += 1
                    t[2].append(abs(raw - truth))
                    t[3].append(abs(value - truth))
            rows += [Row(attr, variant, c, t[0], t[1], float(np.mean(t[2])), float(np.mean(t[3])))
                     for c, t in tally.items() if t[1]]
    return rows


def table(rows: list[Row], weak: str, strong: str) -> str:
    lines = [f"CLEAM of {weak!r} against {strong!r} as the label, per (method, prompt) cell:",
             f"{'attribute':10} {'variant':11} {'matrix from':16} {'closer to the label':>20}  mean |FD − label FD|"]
    for r in rows:
        lines.append(f"{r.attribute:10} {r.variant:11} {r.calibration:16} {f'{r.closer} of {r.cells}':>13} "
                     f"({r.closer / r.cells:4.0%})  {r.error_uncorrected:.3f} uncorrected → {r.error_corrected:.3f}")
    return "\n".join(lines)
