"""``debias-bench verify ENTRY``: re-run the configuration a results file records and compare the new
numbers with it, record by record.

The rerun starts from an empty cache (nothing generated or classified is reused; shipped method
artefacts are, as in any fresh run). Every metric record of the entry is matched with the rerun's
record of the same method, prompt set, prompt, classifier, attribute, metric and variant.

Tolerance (what the project promises across machines): on the machine that made the entry the
rerun is bit-identical; on another CPU, float rounding changes some images slightly, so the rerun
passes when

* at least ``MIN_INSIDE`` (95 %) of the records that carry an interval agree: the rerun's value lies
  inside the entry's interval and the entry's value inside the rerun's (a value forged away from
  its own interval fails the second half),
* records without an interval (FID, KID, UNet evaluations) differ by at most ``MAX_RELATIVE`` (5 %),
* no record is missing.

Wall-clock records (``seconds_per_image``) measure the machine and are not compared.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.errors import ConfigError

KEY_FIELDS = ("method", "prompt_set", "prompt_id", "classifier", "attribute", "metric", "variant")
NOT_COMPARED = frozenset({"seconds_per_image"})
MIN_INSIDE = 0.95
MAX_RELATIVE = 0.05


@dataclass
class Verification:
    rows: list[dict[str, Any]]
    missing: list[tuple] = field(default_factory=list)

    @property
    def with_interval(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["inside"] is not None]

    @property
    def inside_share(self) -> float:
        rows = self.with_interval
        return sum(r["inside"] for r in rows) / len(rows) if rows else 1.0

    @property
    def max_relative(self) -> float:
        return max((r["relative"] for r in self.rows if r["inside"] is None), default=0.0)

    @property
    def passed(self) -> bool:
        return not self.missing and self.inside_share >= MIN_INSIDE and self.max_relative <= MAX_RELATIVE

    def summary(self) -> dict[str, Any]:
        per_method: dict[str, list[bool]] = {}
        for r in self.with_interval:
            per_method.setdefault(r["key"][0], []).append(r["inside"])
        return {
            "records": len(self.rows), "identical": sum(r["delta"] == 0 for r in self.rows),
            "max_abs_delta": max((r["delta"] for r in self.rows), default=0.0),
            "with_interval": len(self.with_interval), "inside_share": self.inside_share,
            "inside_share_per_method": {m: sum(v) / len(v) for m, v in sorted(per_method.items())},
            "max_relative_without_interval": self.max_relative, "missing": len(self.missing),
            "tolerance": {"min_inside": MIN_INSIDE, "max_relative": MAX_RELATIVE}, "passed": self.passed,
        }


def _records(results: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    return {tuple(r.get(k) for k in KEY_FIELDS): r for r in results.get("metrics") or []
            if r.get("metric") not in NOT_COMPARED}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _within(value: float, record: dict[str, Any]) -> bool | None:
    lo, hi = _number(record.get("ci_low")), _number(record.get("ci_high"))
    if lo is None or hi is None:
        return None
    slack = 1e-9 + 1e-6 * abs(value)  # float noise at an interval's edge (an interval may end at its value)
    return bool(lo - slack <= value <= hi + slack)


def compare(entry: dict[str, Any], rerun: dict[str, Any]) -> Verification:
    """Record-by-record comparison of an entry's results with a rerun's (see the module doc)."""
    new = _records(rerun)
    rows, missing = [], []
    for key, old in _records(entry).items():
        if key not in new:
            missing.append(key)
            continue
        a, b = _number(old.get("value")), _number(new[key].get("value"))
        if a is None or b is None:
            if (a is None) != (b is None):
                missing.append(key)
            continue
        inside = _within(b, old)
        if inside is not None:
            inside = inside and _within(a, new[key]) is not False
        rows.append({"key": key, "entry": a, "rerun": b, "delta": abs(b - a), "inside": inside,
                     "relative": abs(b - a) / max(abs(a), 1e-12)})
    return Verification(rows, missing)


def read_results(entry: str | Path) -> dict[str, Any]:
    """results.json of an entry folder, a run folder, or the file itself; one-line errors."""
    path = Path(entry)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"{entry}: no results.json there (give a leaderboard entry or run folder)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable results ({' '.join(str(exc).split())})") from None
    if not isinstance(results, dict) or not isinstance(results.get("config"), dict):
        raise ConfigError(f"{path}: no recorded configuration ('config') to re-run")
    return results


def verify(entry: str | Path, cache_dir: str | Path | None = None, output_dir: str | Path | None = None,
           progress: bool = True) -> tuple[Verification, Path | None]:
    """Re-run ``entry``'s configuration (from an empty cache unless ``cache_dir`` is given) and compare.
    Returns the comparison and the rerun's folder (None when no ``output_dir`` asked to keep it; the
    temporary cache and results are removed)."""
    import shutil

    from benchmark.config import validate_config
    from benchmark.runner import run

    results = read_results(entry)
    work = Path(tempfile.mkdtemp(prefix="debias-bench-verify-"))
    try:
        recorded = {k: v for k, v in results["config"].items() if k not in ("output_dir", "cache_dir", "run_id")}
        config = validate_config({**recorded, "cache_dir": str(cache_dir or work / "cache"),
                                  "output_dir": str(output_dir or work / "results"),
                                  "run_id": f"{results.get('run_id') or 'entry'}-verify"[:100]},
                                 source=f"{entry} (recorded config)")
        run_dir = run(config, progress=progress)
        rerun = json.loads((run_dir / "results.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return compare(results, rerun), (run_dir if output_dir is not None else None)


def format_summary(v: Verification) -> str:
    s = v.summary()
    lines = [f"records compared        {s['records']} ({s['identical']} bit-identical, largest |Δ| {s['max_abs_delta']:.3g})",
             f"inside entry's interval {s['inside_share']:.1%} of {s['with_interval']} (needs ≥ {MIN_INSIDE:.0%})"]
    lines += [f"  {m:<22}{share:.1%}" for m, share in s["inside_share_per_method"].items()]
    lines.append(f"without an interval     largest relative |Δ| {s['max_relative_without_interval']:.2%} "
                 f"(allowed {MAX_RELATIVE:.0%})")
    if v.missing:
        lines.append(f"missing in the rerun    {len(v.missing)}, e.g. {'/'.join(str(k) for k in v.missing[0] if k)}")
    worst = sorted((r for r in v.rows if r["inside"] is False), key=lambda r: -r["delta"])[:5]
    for r in worst:
        lines.append(f"  outside: {'/'.join(str(k) for k in r['key'] if k is not None)}: {r['entry']:.4g} → {r['rerun']:.4g}")
    lines.append("verify: PASS" if v.passed else "verify: FAIL (beyond the documented tolerance)")
    return "\n".join(lines)
