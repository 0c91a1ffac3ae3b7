"""How far a classifier's CLEAM correction can be trusted on a run: ``debias-bench cleam-check RUN``.

CLEAM (``benchmark.metrics.cleam``) assumes the classifier errs on the measured images as it did on
the images its confusion matrix was measured on. This check tests that on a run where a second,
stronger classifier labelled the same images: its argmax is taken as the label. For every attribute
both classify and every (method, prompt) cell that leaves the attribute open, it compares the weak
classifier's FD with the FD of the labels, uncorrected and corrected with three kinds of matrix:

* ``shipped``: the run's own ``*-cleam`` records (the matrices the classifier ships with), against
  the FD of the whole cell's labels;
* ``baseline images``: matrices measured on the run's baseline images of the same content (methods'
  cells only);
* ``own images``: matrices measured on the evaluated method's own images of the same content.

The last two split every cell by image index parity: each half is corrected with a matrix measured
on the other half's images (of every prompt of that content that leaves the attribute open) and
compared with the FD of its own labels; the cell's error is the mean over its two halves, and so is its uncorrected error. (Scoring
the halves' average against the whole cell's labels would be circular: a matrix measured on half A
reproduces A's labels exactly, and the two halves' errors cancel.) A content is the one class of the
classifier's per-content matrices that the prompt names (``cleam.content_of``); prompts that name
none share one matrix. Images either classifier marks as showing no subject are left out (the run's
records leave out those of their own classifier). A cell with no matrix (a class without a labelled
image) counts as uncorrected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.errors import DataError
from benchmark.metrics._checks import target_or_uniform
from benchmark.metrics.cleam import confusion_matrix, content_of, corrected_distribution, observed_shares
from benchmark.metrics.fairness import fairness_discrepancy

CALIBRATIONS = ("shipped", "baseline images", "own images")


@dataclass(frozen=True)
class Row:
    """One (attribute, CLEAM variant, matrix source) line of the check."""

    attribute: str
    variant: str  # hard-cleam or soft-cleam
    calibration: str  # one of CALIBRATIONS
    closer: int  # cells whose corrected FD is closer to the labels' FD than the uncorrected one
    cells: int
    uncalibrated: int  # cells with no matrix, counted as uncorrected
    error_uncorrected: float  # mean |FD − labels' FD| over the cells
    error_corrected: float


@dataclass
class _Tally:
    closer: int = 0
    uncalibrated: int = 0
    raw: list[float] = field(default_factory=list)
    corrected: list[float] = field(default_factory=list)

    def add(self, raw: float, corrected: float | None) -> None:
        if corrected is None:
            self.uncalibrated += 1
            corrected = raw
        self.closer += corrected < raw
        self.raw.append(raw)
        self.corrected.append(corrected)


@dataclass(frozen=True)
class _Attribute:
    """Where one attribute's numbers are in the predictions, for one prompt set."""

    prompt_set: str
    classes: list[str]
    target: np.ndarray
    texts: dict[str, str]  # prompt id → text, for prompts that leave the attribute open
    contents: list[str]  # the weak classifier's per-content matrices' contents

    def columns(self, classifier: str, attr: str) -> list[str]:
        return _columns(classifier, attr, self.classes)


def _columns(classifier: str, attr: str, classes: list[str]) -> list[str]:
    return [f"{classifier}/{attr}/{c}" for c in classes]


def _matrix(rows: pd.DataFrame, weak: list[str], strong: list[str], hard: bool) -> np.ndarray | None:
    """The weak classifier's confusion matrix on ``rows``, labelled by the strong classifier's argmax;
    None when a class has no labelled image."""
    labels = rows[strong].to_numpy().argmax(axis=1)
    if len(rows) == 0 or (np.bincount(labels, minlength=len(strong)) == 0).any():
        return None
    return confusion_matrix(labels, rows[weak].to_numpy(), hard=hard)


def _load(run_dir: Path, weak: str, strong: str) -> tuple[dict[str, Any], pd.DataFrame]:
    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        pred = pd.read_parquet(run_dir / "predictions.parquet")
    except (OSError, ValueError) as exc:
        raise DataError(f"{run_dir}: not a run folder with results.json and predictions.parquet ({exc})") from None
    if not isinstance(results, dict) or not isinstance(results.get("prompt_sets"), dict):
        raise DataError(f"{run_dir}/results.json: no prompt_sets (not a run's results)")
    missing = [c for c in ("method", "prompt_set", "prompt_id", "prompt", "index") if c not in pred.columns]
    if missing:
        raise DataError(f"{run_dir}/predictions.parquet: no column {missing[0]!r}")
    if weak == strong:
        raise DataError(f"cleam-check: --weak and --strong are both {weak!r}; the label must come from another classifier")
    return results, pred


def _attributes(results: dict[str, Any], pred: pd.DataFrame, weak: str, strong: str) -> dict[str, list[_Attribute]]:
    """Per attribute both classifiers give for some prompt set, where its numbers are."""
    models = (results.get("models") or {}).get("classifiers") or {}
    for name in (weak, strong):
        if name not in models:
            raise DataError(f"cleam-check: the run has no classifier {name!r} (it has {sorted(models)})")
    out: dict[str, list[_Attribute]] = {}
    for ps, info in results["prompt_sets"].items():
        for attr, classes in (info.get("classes") or {}).items():
            if not all(col in pred.columns for c in (weak, strong) for col in _columns(c, attr, list(classes))):
                continue
            given = (info.get("target") or {}).get(attr)
            if isinstance(given, dict):
                given = [given.get(c) for c in classes]
            try:
                target = target_or_uniform(None if given is None else np.asarray(given, dtype=np.float64), len(classes))
            except (DataError, TypeError, ValueError) as exc:
                raise DataError(f"results.json: prompt_sets.{ps}.target.{attr} is not a distribution over "
                                f"{classes} ({exc})") from None
            texts = {p["id"]: p["text"] for p in info.get("prompts", []) if attr not in (p.get("named") or {})}
            contents = sorted((models[weak].get("confusion_by_content") or {}).get(attr) or {})
            out.setdefault(attr, []).append(_Attribute(ps, list(classes), target, texts, contents))
    if not out:
        raise DataError(f"cleam-check: {weak!r} and {strong!r} classify no attribute in common in the predictions")
    return out


def check(run_dir: str | Path, weak: str, strong: str) -> list[Row]:
    """Every (attribute, variant, matrix source) row of the check (see the module doc)."""
    run_dir = Path(run_dir)
    results, pred = _load(run_dir, weak, strong)
    try:
        return _check(results, pred, weak, strong)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise DataError(f"{run_dir}: results.json or predictions.parquet is not shaped like a run's "
                        f"({type(exc).__name__}: {exc})") from None


def _check(results: dict[str, Any], pred: pd.DataFrame, weak: str, strong: str) -> list[Row]:
    attributes = _attributes(results, pred, weak, strong)
    for name in (weak, strong):  # images without a subject are left out
        column = f"{name}/has_subject"
        if column in pred.columns:
            if not pd.api.types.is_bool_dtype(pred[column]):
                raise DataError(f"predictions.parquet: {column} is not boolean")
            pred = pred[pred[column]]
    if not np.isfinite(pd.to_numeric(pred["index"], errors="coerce")).all():
        raise DataError("predictions.parquet: the index column holds values that are not whole numbers")
    pred = pred.assign(fold=pred["index"].astype(int) % 2)
    baseline = (results.get("config") or {}).get("baseline", "baseline")
    records = {(r.get("method"), r.get("prompt_set"), r.get("prompt_id"), r.get("classifier"), r.get("attribute"),
                r.get("variant")): float(r["value"])
               for r in results.get("metrics") or [] if isinstance(r, dict) and r.get("metric") == "fd"
               and r.get("prompt_id") is not None and isinstance(r.get("value"), (int, float))
               and np.isfinite(r["value"])}
    rows: list[Row] = []
    for attr, spots in attributes.items():
        for hard in (True, False):
            variant = "hard-cleam" if hard else "soft-cleam"
            tally = {c: _Tally() for c in CALIBRATIONS}
            for spot in spots:
                _tally_prompt_set(spot, attr, pred, weak, strong, hard, records, baseline, tally)
            rows += [Row(attr, variant, c, t.closer, len(t.raw), t.uncalibrated, float(np.mean(t.raw)),
                         float(np.mean(t.corrected))) for c, t in tally.items() if t.raw]
    if not rows:
        raise DataError("cleam-check: no (method, prompt) cell leaves an attribute both classifiers give open")
    return rows


def _tally_prompt_set(spot: _Attribute, attr: str, pred: pd.DataFrame, weak: str, strong: str, hard: bool,
                      records: dict, baseline: str, tally: dict[str, _Tally]) -> None:
    wcols, scols = spot.columns(weak, attr), spot.columns(strong, attr)
    rows = pred[(pred["prompt_set"] == spot.prompt_set) & pred["prompt_id"].isin(spot.texts)]
    rows = rows.assign(content=rows["prompt"].map(lambda t: content_of(str(t), spot.contents) or ""))
    pools = {key: g for key, g in rows.groupby(["method", "content"], sort=False)}
    has_baseline = bool((rows["method"] == baseline).any())
    variant = "hard-cleam" if hard else "soft-cleam"

    def fd(shares: np.ndarray) -> float:
        return float(fairness_discrepancy(shares, spot.target))

    for (method, pid), cell in rows.groupby(["method", "prompt_id"], sort=True):
        label_fd = fd(observed_shares(cell[scols].to_numpy(), True))
        raw = abs(fd(observed_shares(cell[wcols].to_numpy(), hard)) - label_fd)
        shipped = records.get((method, spot.prompt_set, pid, weak, attr, variant))
        if shipped is not None:
            tally["shipped"].add(raw, abs(float(shipped) - label_fd))
        halves = [cell[cell["fold"] == f] for f in (0, 1)]
        halves = [(f, h) for f, h in enumerate(halves) if len(h)]
        half_raw = float(np.mean([abs(fd(observed_shares(h[wcols].to_numpy(), hard)) - fd(observed_shares(h[scols].to_numpy(), True)))
                                  for _, h in halves]))
        for calibration, source in (("baseline images", baseline), ("own images", method)):
            if calibration == "baseline images" and (method == baseline or not has_baseline):
                continue  # the same as "own images" there; or no baseline in the run
            pool = pools.get((source, cell["content"].iloc[0]))
            errors = []
            for f, half in halves:
                matrix = None if pool is None else _matrix(pool[pool["fold"] != f], wcols, scols, hard)
                if matrix is None:
                    errors = None
                    break
                corrected = corrected_distribution(observed_shares(half[wcols].to_numpy(), hard), matrix)
                errors.append(abs(fd(corrected) - fd(observed_shares(half[scols].to_numpy(), True))))
            tally[calibration].add(half_raw, None if not errors else float(np.mean(errors)))


def table(rows: list[Row], weak: str, strong: str) -> str:
    """The rows as a console table."""
    lines = [f"CLEAM of {weak!r} with {strong!r}'s argmax as the label, per (method, prompt) cell",
             "(matrices from generated images: each half of a cell corrected with the other half's matrix and",
             " compared with its own labels):",
             f"{'attribute':10} {'variant':11} {'matrix from':16} {'closer to the labels':>21}  mean |FD − labels' FD|"]
    for r in rows:
        note = f", {r.uncalibrated} without a matrix" if r.uncalibrated else ""
        lines.append(f"{r.attribute:10} {r.variant:11} {r.calibration:16} {f'{r.closer} of {r.cells}':>14} "
                     f"({r.closer / r.cells:4.0%})  {r.error_uncorrected:.3f} uncorrected → {r.error_corrected:.3f}{note}")
    return "\n".join(lines)
