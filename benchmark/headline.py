"""The headline of a run: which method is fairest on each attribute, and at what cost.

Read from ``results.json`` alone, so the console (after a run), the run's report and the leaderboard
page show the same thing.
"""

from __future__ import annotations

import textwrap

import pandas as pd


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
    base_fid = fid.get((results.get("config") or {}).get("baseline", "baseline"), {}).get("value")
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


def cleam_warnings(results: dict) -> list[str]:
    """One line per classifier whose recorded accuracy varies across contents beyond the limit: its
    ``*-cleam`` numbers rest on a failed assumption (one confusion matrix for every prompt)."""
    lines = []
    for name, info in results.get("models", {}).get("classifiers", {}).items():
        check = info.get("cleam_assumption") or {}
        if check and not check.get("holds", True):
            spread = ", ".join(f"{a} {s:.2f}" for a, s in check.get("accuracy_spread", {}).items())
            lines.append(f"classifier {name}: accuracy varies across contents by {spread} (limit {check.get('limit')}); "
                         "its *-cleam numbers rest on a failed assumption")
    return lines


HEADLINE_COLUMNS = ["method", "FD [95% CI]", "ΔFD [95% CI]", "p", "FID×", "ΔCLIP-T", "CLIP-I", "UNet×"]


def headline_blocks(results: dict) -> list[tuple[str, str, str | None, list[list[str]]]]:
    """(prompt set, attribute, classifier, rows of formatted cells in ``HEADLINE_COLUMNS`` order) for
    every prompt set and attribute: what the console, the report and the page all show."""
    classifier = next(iter(results.get("models", {}).get("classifiers", {})), None)
    blocks = []
    for ps, info in results.get("prompt_sets", {}).items():
        for attr in info.get("attributes", []):
            frame = headline_frame(results, ps, attr, classifier)
            if frame.empty:
                continue
            rows = []
            for r in frame.to_dict("records"):
                p = r["p"]
                rows.append([
                    str(r["method"]),
                    f"{r['fd']:.3f} [{_num(r['fd_low'], '.3f')}, {_num(r['fd_high'], '.3f')}]",
                    "—" if r["delta"] is None or r["delta"] != r["delta"] else
                    f"{r['delta']:+.3f} [{_num(r['delta_low'], '+.3f')}, {_num(r['delta_high'], '+.3f')}]",
                    "—" if p is None or p != p else ("<.001" if p < 0.001 else f"{p:.3f}"),
                    _num(r["fid_ratio"], ".2f"), _num(r["delta_clip_t"], "+.1f"), _num(r["clip_i"], ".3f"),
                    _num(r["unet_ratio"], ".1f"),
                ])
            blocks.append((ps, attr, classifier, rows))
    return blocks


def headline_table(results: dict) -> str:
    """The headline as text that fits 100 columns: one block per prompt set and attribute."""
    widths = [12, 21, 23, 6, 5, 8, 6, 5]
    left = {0, 1, 2}

    def line(cells: list[str]) -> str:
        return " ".join(c[:w].ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    blocks = []
    for ps, attr, classifier, rows in headline_blocks(results):
        lines = [f"{ps} · {attr} · classifier {classifier}: soft FD (lower is fairer), sorted; Δ paired vs baseline",
                 line(HEADLINE_COLUMNS).rstrip(), *(line(r).rstrip() for r in rows)]
        blocks.append("\n".join(lines))
    warnings = "\n".join(textwrap.fill(w, 100) for w in cleam_warnings(results))
    return "\n\n".join([*blocks, *([warnings] if warnings else [])]) or "no fairness metrics"
