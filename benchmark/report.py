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


def headline_frame(results: dict, prompt_set: str, attribute: str, classifier: str | None = None) -> pd.DataFrame:
    """Which method is fairest on ``attribute``, at what cost: one row per method, sorted by soft FD.

    Columns: soft FD with its interval, the paired change against the baseline (interval, p-value),
    FID and UNet evaluations as ratios to the baseline, the paired CLIP-T change, CLIP-I."""
    frame = pd.DataFrame(results.get("metrics", []))
    if frame.empty:
        return frame
    classifier = classifier or next(iter(results["models"]["classifiers"]), None)
    frame = frame[frame["prompt_id"].isna() & (frame["prompt_set"] == prompt_set)]

    def pick(metric: str, variant: str, attr: str | None, clf: str | None) -> dict[str, dict]:
        rows = frame[(frame["metric"] == metric) & (frame["variant"] == variant)]
        rows = rows[rows["attribute"].isna()] if attr is None else rows[rows["attribute"] == attr]
        rows = rows[rows["classifier"].isna()] if clf is None else rows[rows["classifier"] == clf]
        return {r["method"]: r for r in rows.to_dict("records")}

    fd = pick("fd", "soft", attribute, classifier)
    delta = pick("delta_fd", "soft", attribute, classifier)
    fid, evals = pick("fid", "vs-reference", None, None), pick("unet_evals", "vs-baseline", None, None)
    dclip, clip_i = pick("delta_clip_t", "mean", None, None), pick("clip_i", "vs-baseline", None, None)
    base_fid = fid.get("baseline", {}).get("value")
    rows = []
    for method, r in fd.items():
        rows.append({
            "method": method, "fd": r["value"], "fd_low": r["ci_low"], "fd_high": r["ci_high"],
            "delta": delta.get(method, {}).get("value"), "delta_low": delta.get(method, {}).get("ci_low"),
            "delta_high": delta.get(method, {}).get("ci_high"), "p": delta.get(method, {}).get("p_value"),
            "fid_ratio": fid[method]["value"] / base_fid if method in fid and base_fid else None,
            "delta_clip_t": dclip.get(method, {}).get("value"), "clip_i": clip_i.get(method, {}).get("value"),
            "unet_ratio": evals.get(method, {}).get("value"),
        })
    return pd.DataFrame(rows).sort_values("fd", kind="stable").reset_index(drop=True) if rows else pd.DataFrame()


def _num(x: object, fmt: str, none: str = "—") -> str:
    return none if x is None or x != x else format(x, fmt)


def headline_table(results: dict) -> str:
    """The headline as text that fits 100 columns: one block per prompt set and attribute."""
    blocks = []
    classifier = next(iter(results["models"]["classifiers"]), None)
    for ps, info in results.get("prompt_sets", {}).items():
        for attr in info.get("attributes", []):
            frame = headline_frame(results, ps, attr, classifier)
            if frame.empty:
                continue
            lines = [f"{ps} · {attr} · classifier {classifier}: soft FD (lower is fairer), sorted; Δ paired vs baseline",
                     f"{'method':<12} {'FD [95% CI]':<21} {'ΔFD [95% CI]':<23} {'p':>6} {'FID×':>5} {'ΔCLIP-T':>8} "
                     f"{'CLIP-I':>6} {'UNet×':>5}"]
            for r in frame.to_dict("records"):
                ci = f"{r['fd']:.3f} [{_num(r['fd_low'], '.3f')}, {_num(r['fd_high'], '.3f')}]"
                delta = ("—" if r["delta"] is None or r["delta"] != r["delta"] else
                         f"{r['delta']:+.3f} [{_num(r['delta_low'], '+.3f')}, {_num(r['delta_high'], '+.3f')}]")
                p = "—" if r["p"] is None or r["p"] != r["p"] else ("<.001" if r["p"] < 0.001 else f"{r['p']:.3f}")
                lines.append(f"{str(r['method'])[:12]:<12} {ci:<21} {delta:<23} {p:>6} {_num(r['fid_ratio'], '.2f'):>5} "
                             f"{_num(r['delta_clip_t'], '+.1f'):>8} {_num(r['clip_i'], '.3f'):>6} "
                             f"{_num(r['unet_ratio'], '.1f'):>5}")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) or "no fairness metrics"


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
