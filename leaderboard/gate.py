"""Regression gate: compare a run with a baseline run, metric by metric, and fail on a real regression.

For every set-level record (``prompt_id`` null) present in the baseline, with d = current − baseline and
the bad direction given by the record's ``higher_is_better``::

    margin = hw(current) + hw(baseline) + tolerance        hw = (ci_high − ci_low) / 2
    margin = relative_tolerance · |baseline| + tolerance   for a metric without a CI (FID, KID)
    worse      if d moved in the bad direction by more than margin
    better     if d moved in the good direction by more than margin
    unchanged  otherwise

Adding the two half-widths is deliberately conservative (it is the overlap test of two intervals): a
move the intervals can explain is not a regression. A metric without an interval gets the relative
tolerance instead (default 5 %, the cross-machine tolerance of ``debias-bench verify``), so a faithful
rerun whose FID differs in the last digit passes. A record that disappeared counts as ``missing``
and fails the gate like ``worse``; wall-clock metrics are shown but not gated (they measure the machine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import BenchError
from leaderboard.rundir import RESULTS_FILE, load_run

# wall-clock and cost measure the machine; a p-value tests a hypothesis, it is no quality to regress
NOT_GATED = frozenset({"seconds_per_image", "unet_evals", "target_p"})
KEY_FIELDS = ("method", "prompt_set", "classifier", "attribute", "metric", "variant")
FAILING = ("worse", "missing")
RELATIVE_TOLERANCE = 0.05  # for metrics without an interval


@dataclass(frozen=True)
class Change:
    """One metric's comparison."""

    key: tuple
    status: str
    baseline: float | None
    current: float | None
    margin: float
    higher_is_better: bool

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    def field(self, name: str) -> Any:
        return self.key[KEY_FIELDS.index(name)]


def half_width(rec: dict[str, Any]) -> float:
    lo, hi = rec.get("ci_low"), rec.get("ci_high")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0
    return max(float(hi) - float(lo), 0.0) / 2.0


def _set_level(results: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    return {tuple(r.get(k) for k in KEY_FIELDS): r for r in results.get("metrics") or [] if r.get("prompt_id") is None}


def _has_interval(rec: dict[str, Any]) -> bool:
    lo, hi = rec.get("ci_low"), rec.get("ci_high")
    return isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and math.isfinite(lo) and math.isfinite(hi)


def classify(base: dict[str, Any], cur: dict[str, Any], tolerance: float,
             relative_tolerance: float = RELATIVE_TOLERANCE) -> tuple[str, float]:
    """(status, margin) for one pair of records, by the rule in the module docstring."""
    b, c = base.get("value"), cur.get("value")
    if _has_interval(base) or _has_interval(cur):
        margin = half_width(base) + half_width(cur) + tolerance
    else:
        margin = relative_tolerance * abs(b if isinstance(b, (int, float)) and math.isfinite(b) else 0.0) + tolerance
    if b is None or c is None or not (math.isfinite(b) and math.isfinite(c)):
        return ("missing" if c is None or not math.isfinite(c) else "unchanged"), margin
    bad = (b - c) if bool(base.get("higher_is_better")) else (c - b)
    if bad > margin:
        return "worse", margin
    if -bad > margin:
        return "better", margin
    return "unchanged", margin


@dataclass
class GateResult:
    changes: list[Change]
    tolerance: float
    relative_tolerance: float = RELATIVE_TOLERANCE

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.changes)

    @property
    def failed(self) -> bool:
        return any(c.status in FAILING for c in self.changes)

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("worse", "missing", "better", "unchanged", "new", "not gated") if self.count(s)]
        verdict = "FAIL" if self.failed else "pass"
        return (f"gate {verdict}: {', '.join(parts) or 'nothing to compare'} (tolerance {self.tolerance:g}; "
                f"{self.relative_tolerance:.0%} relative for metrics without an interval)")

    def to_json(self) -> dict[str, Any]:
        """The full comparison, one object per metric (``debias-bench gate --json``)."""
        return {"passed": not self.failed, "tolerance": self.tolerance, "relative_tolerance": self.relative_tolerance,
                "counts": {s: self.count(s) for s in ("worse", "missing", "better", "unchanged", "new", "not gated")},
                "changes": [{**dict(zip(KEY_FIELDS, c.key, strict=True)), "status": c.status, "baseline": c.baseline,
                             "current": c.current, "delta": c.delta, "margin": c.margin,
                             "higher_is_better": c.higher_is_better} for c in self.changes]}

    def table(self, only_moved: bool = False) -> str:
        """A fixed-width text table, failures first."""
        order = {"worse": 0, "missing": 1, "better": 2, "new": 3, "unchanged": 4, "not gated": 5}
        rows = sorted(self.changes, key=lambda c: (order.get(c.status, 9), tuple(str(k or "") for k in c.key)))
        if only_moved:
            rows = [c for c in rows if c.status not in ("unchanged", "not gated")]
        header = ["status", "method", "prompt set", "classifier", "attribute", "metric", "variant", "baseline",
                  "current", "delta", "margin"]
        body = [
            [
                c.status,
                _clean(c.field("method")),
                _clean(c.field("prompt_set")),
                _clean(c.field("classifier") or "-"),
                _clean(c.field("attribute") or "-"),
                _clean(c.field("metric")) + (" ↑" if c.higher_is_better else " ↓"),
                _clean(c.field("variant") or "-"),
                _fmt(c.baseline),
                _fmt(c.current),
                _fmt(c.delta, signed=True),
                _fmt(c.margin),
            ]
            for c in rows
        ]
        widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in body]
        return "\n".join(lines)


def _clean(text: Any, limit: int = 40) -> str:
    # Names come from configs and submissions; control characters could rewrite the terminal.
    s = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def compare_results(
    current: dict[str, Any],
    baseline: dict[str, Any],
    tolerance: float = 0.0,
    not_gated: frozenset[str] = NOT_GATED,
    method: str | None = None,
    prompt_set: str | None = None,
    relative_tolerance: float = RELATIVE_TOLERANCE,
) -> GateResult:
    """Compare two parsed results.json documents (optionally one method / prompt set)."""
    for name, value in (("tolerance", tolerance), ("relative tolerance", relative_tolerance)):
        if not math.isfinite(value) or value < 0:
            raise BenchError(f"gate: {name} must be a finite number ≥ 0, got {value}")
    base, cur = _set_level(baseline), _set_level(current)

    def wanted(key: tuple) -> bool:
        return (method is None or key[0] == method) and (prompt_set is None or key[1] == prompt_set)

    changes = []
    for key, b in base.items():
        if not wanted(key):
            continue
        hib = bool(b.get("higher_is_better"))
        c = cur.get(key)
        if c is None:
            changes.append(Change(key, "missing", b.get("value"), None, 0.0, hib))
            continue
        status, margin = classify(b, c, tolerance, relative_tolerance)
        if key[4] in not_gated:
            status = "not gated"
        changes.append(Change(key, status, b.get("value"), c.get("value"), margin, hib))
    for key, c in cur.items():
        if key not in base and wanted(key):
            changes.append(Change(key, "new", None, c.get("value"), 0.0, bool(c.get("higher_is_better"))))
    return GateResult(changes, tolerance, relative_tolerance)


def baseline_exists(path: str | Path) -> bool:
    p = Path(path)
    return (p / RESULTS_FILE).is_file() or (p.is_file() and p.name.endswith(".json"))


def compare_runs(current: str | Path, baseline: str | Path, tolerance: float = 0.0, **kwargs: Any) -> GateResult:
    """Compare two run directories (or results.json paths)."""
    return compare_results(load_run(current).results, load_run(baseline).results, tolerance, **kwargs)


def run_gate(
    current: str | Path,
    baseline: str | Path,
    tolerance: float = 0.0,
    require_baseline: bool = False,
    show_unchanged: bool = False,
    relative_tolerance: float = RELATIVE_TOLERANCE,
    json_path: str | Path | None = None,
) -> int:
    """The ``debias-bench gate`` command: print what moved (everything with ``show_unchanged``), return 1
    when anything got worse; ``json_path`` receives the full comparison."""
    if not baseline_exists(baseline):
        if require_baseline:
            raise BenchError(f"{baseline}: baseline not found (no results.json) and --require-baseline was given")
        print(f"first run: nothing to compare (no baseline at {baseline}); gate passes")
        return 0
    result = compare_runs(current, baseline, tolerance, relative_tolerance=relative_tolerance)
    if show_unchanged or any(c.status not in ("unchanged", "not gated") for c in result.changes):
        print(result.table(only_moved=not show_unchanged))
    print(result.summary())
    if json_path is not None:
        import json

        Path(json_path).write_text(json.dumps(result.to_json(), indent=1))
    return 1 if result.failed else 0
