"""A run's plain report: the set-level metric table as text (CLI) and as a static HTML page.

The full leaderboard page (figures, sorting, thumbnails) is :mod:`leaderboard.html`; when it
is installed, ``write_report`` uses it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from benchmark.cache import atomic_write
from benchmark.errors import DataError

SUMMARY_METRICS = [("fd", "soft"), ("fd", "hard"), ("spd", "proportion-gap"), ("entropy", "soft"),
                   ("fid", "vs-reference"), ("clip_t", "mean")]


def load_results(run_dir: Path) -> dict:
    path = Path(run_dir) / "results.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no results.json (is this a run directory?)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def set_level_frame(results: dict) -> pd.DataFrame:
    """Set-level records as a frame: one row per method, one column per metric/variant/attribute."""
    frame = pd.DataFrame(results.get("metrics", []))
    if frame.empty:
        return frame
    frame = frame[frame["prompt_id"].isna()].copy()
    frame["column"] = frame.apply(
        lambda r: "/".join(str(x) for x in (r["metric"], r["variant"], r.get("attribute")) if x not in (None, "") and x == x),
        axis=1,
    )
    wide = frame.pivot_table(index="method", columns=["prompt_set", "column"], values="value", aggfunc="first")
    order = list(dict.fromkeys(m["key"] if isinstance(m, dict) and "key" in m else m.get("label") or m["name"]
                               for m in results["config"]["methods"]))
    return wide.reindex([m for m in order if m in wide.index])


def summary_table(run_dir: Path) -> str:
    results = load_results(run_dir)
    frame = pd.DataFrame(results.get("metrics", []))
    if frame.empty:
        return "no metrics"
    frame = frame[frame["prompt_id"].isna()]
    keep = frame[[(m, v) in SUMMARY_METRICS for m, v in zip(frame["metric"], frame["variant"], strict=True)]]
    if keep.empty:
        keep = frame
    keep = keep.assign(
        cell=[f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo == lo and lo is not None else "")
              for v, lo, hi in zip(keep["value"], keep["ci_low"].astype(float), keep["ci_high"].astype(float), strict=True)],
        column=[f"{m}:{v}" + (f":{a}" if isinstance(a, str) else "") for m, v, a in
                zip(keep["metric"], keep["variant"], keep["attribute"], strict=True)],
    )
    wide = keep.pivot_table(index=["prompt_set", "method"], columns="column", values="cell", aggfunc="first")
    lines = [wide.to_string()]
    for failure in results.get("failures", []):
        lines.append(f"FAILED {failure['stage']}: {failure['method']} on {failure['prompt_set']}/"
                     f"{failure['prompt_id']}: {failure['error']}")
    return "\n".join(lines)


def truth_frame(results: dict, method: str = "baseline") -> pd.DataFrame:
    """Measured vs configured attribute shares of one method, one row per prompt and class."""
    frame = pd.DataFrame(results.get("truth") or [])
    if frame.empty:
        return frame
    frame = frame[frame["method"] == method]
    return frame[["prompt_set", "prompt_id", "attribute", "class", "configured", "measured", "ci_low", "ci_high"]]


def truth_table(results: dict, method: str = "baseline") -> str:
    """:func:`truth_frame` as text, with a flag on rows whose 95 % interval misses the configured share."""
    frame = truth_frame(results, method)
    if frame.empty:
        return ""
    frame = frame.assign(
        measured=[f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in
                  zip(frame["measured"], frame["ci_low"], frame["ci_high"], strict=True)],
        covered=["yes" if lo <= c <= hi else "no" for c, lo, hi in
                 zip(frame["configured"], frame["ci_low"], frame["ci_high"], strict=True)],
    ).drop(columns=["ci_low", "ci_high"])
    return f"{method}: measured vs configured attribute shares (soft, 95% CI)\n" + frame.to_string(index=False)


def plain_html(results: dict) -> str:
    frame = pd.DataFrame(results.get("metrics", []))
    table = frame.to_html(index=False, escape=True, na_rep="") if not frame.empty else "<p>no metrics</p>"
    failures = "".join(f"<li>{html.escape(json.dumps(f))}</li>" for f in results.get("failures", []))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>debias-bench run {html.escape(str(results.get('run_id')))}</title></head><body>"
        f"<h1>debias-bench run {html.escape(str(results.get('run_id')))}</h1>"
        f"<h2>Failures</h2><ul>{failures or '<li>none</li>'}</ul><h2>Metrics</h2>{table}"
        f"<h2>Provenance</h2><pre>{html.escape(json.dumps({k: results.get(k) for k in ('versions', 'models', 'config')}, indent=1))}</pre>"
        "</body></html>"
    )


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    try:
        from leaderboard.html import render_report
    except ImportError:
        results = load_results(run_dir)
        out = run_dir / "report.html"
        atomic_write(out, plain_html(results).encode())
        return out
    return render_report(run_dir)
