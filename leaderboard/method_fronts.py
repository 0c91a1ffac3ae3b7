"""Per method, every shipped study's settings together: its fairness–quality front and its robustness.

A study answers one question (InvDiff's r, DiffLens's deviations, the guidance scale). A reader of the
page asks per method: what can it reach, at what cost, with the paper's settings or the world's, and
does it hold when the sampler moves? Studies run at the same budget, prompts and measure share their
baseline images (the same cache and seeds), so their settings at the profile's sampler are comparable
on one front; the sampler grids (guidance, step count) give each method's worst FD.
"""

from __future__ import annotations

import json
from typing import Any

from benchmark.study_fronts import front
from leaderboard.studies import _f

TUNED = "world defaults"
# Paul Tol's "bright" scheme: distinct hues that stay apart under colour-vision deficiency (grey last)
TOL_BRIGHT = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB"]


def _scope(study: dict[str, Any]) -> str:
    """Studies with the same run settings and measure are comparable (one baseline)."""
    spec = study.get("study") or {}
    return json.dumps([spec.get("run"), spec.get("measure")], sort_keys=True, default=str)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and x == x


def setting_kind(row: dict[str, Any]) -> str:
    """How a row's setting relates to the method's presets: the paper's, the world defaults, or the
    world defaults with some knobs moved."""
    knobs = row.get("knobs") or {}
    if row.get("preset") == "paper":
        return "paper" + ("".join(f", {k} {v}" for k, v in knobs.items()) if knobs else "")
    defaults = _defaults(str(row.get("method")))
    if all(k in defaults and defaults[k] == v for k, v in knobs.items()):
        return TUNED  # a grid point at the method's own default values
    return TUNED + ", " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in knobs.items())


def _defaults(method: str) -> dict[str, Any]:
    """The method's default parameters (empty for a method this installation does not know)."""
    import dataclasses

    from methods import METHODS

    if method not in METHODS:
        return {}
    return {f.name: getattr(METHODS.get(method).Params(), f.name) for f in dataclasses.fields(METHODS.get(method).Params)}


def method_rows(studies: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Method → scope → its settings at the profile's sampler across studies (first occurrence of
    identical numbers kept, with the studies it appears in), the baseline first."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    baselines: dict[str, dict[str, Any]] = {}
    for study in studies:
        name = (study.get("study") or {}).get("name") or str(study.get("file", "?"))
        scope = _scope(study)
        for r in study.get("rows") or []:
            if not isinstance(r, dict) or r.get("sampler") or not _number(r.get("fd")):
                continue
            if r.get("label") == "baseline":
                baselines.setdefault(scope, {**r, "studies": []})["studies"].append(name)
                continue
            mine = out.setdefault(str(r.get("method")), {}).setdefault(scope, [])
            same = next((m for m in mine if m["fd"] == r["fd"] and m.get("fid") == r.get("fid")), None)
            if same is not None:
                same["studies"].append(name)
            else:
                mine.append({**r, "studies": [name], "kind": setting_kind(r)})
    for scopes in out.values():
        for scope, rows in scopes.items():
            if scope in baselines:
                rows.insert(0, {**baselines[scope], "kind": "baseline"})
            for name, other, sign in (("on_fid_front", "fid", 1.0), ("on_clip_front", "clip_t", -1.0)):
                have = [r for r in rows if _number(r.get(other))]
                for r, on in zip(have, front([(r["fd"], sign * r[other]) for r in have]), strict=True):
                    r[name] = on
    return out


def robustness_rows(studies: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Method → the FD of its world-default setting (and the baseline's) at every point of every
    study's sampler grid, with the knob that moved."""
    out: dict[str, list[dict[str, Any]]] = {}
    for study in studies:
        grid = (study.get("study") or {}).get("sampler") or {}
        if len(grid) != 1:
            continue
        knob = next(iter(grid))
        rows = [r for r in study.get("rows") or [] if isinstance(r, dict) and _number(r.get("fd"))
                and not r.get("knobs") and r.get("preset", "defaults") == "defaults" and knob in (r.get("sampler") or {})]
        base = {r["sampler"][knob]: r["fd"] for r in rows if r.get("label") == "baseline"}
        for r in rows:
            if r.get("label") != "baseline":
                out.setdefault(str(r["method"]), []).append(
                    {"knob": knob, "value": r["sampler"][knob], "fd": r["fd"], "fd_low": r.get("fd_low"),
                     "fd_high": r.get("fd_high"), "baseline_fd": base.get(r["sampler"][knob]),
                     "study": (study.get("study") or {}).get("name")})
    return out


def _front_figure(method: str, rows: list[dict[str, Any]], render: Any) -> dict[str, str]:
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for ax, other, flag, label in ((axes[0], "fid", "on_fid_front", "FID vs reference (lower is closer) ←"),
                                   (axes[1], "clip_t", "on_clip_front", "CLIP-T (higher is more on-prompt) →")):
        here = [r for r in rows if _number(r.get(other))]
        for r in here:
            low, high = r.get("fd_low"), r.get("fd_high")
            err = [[r["fd"] - low], [high - r["fd"]]] if _number(low) and _number(high) else None
            kind = r["kind"]
            marker = "s" if kind == "baseline" else "^" if kind.startswith("paper") else "*" if kind == TUNED else "o"
            colour = "black" if kind == "baseline" else "tab:red" if r.get(flag) else "tab:blue"
            ax.errorbar(r["fd"], r[other], xerr=err, fmt=marker, color=colour, ecolor="0.8", capsize=2, markersize=7)
        line = sorted((r for r in here if r.get(flag) and r["kind"] != "baseline"), key=lambda r: r["fd"])
        if len(line) > 1:
            ax.plot([r["fd"] for r in line], [r[other] for r in line], color="tab:red", lw=1, ls="--")
        ax.set_xlabel("FD (lower is fairer) ←", fontsize=9)
        ax.set_ylabel(label, fontsize=9)
    axes[0].set_yscale("log")  # a preset that breaks the images sits an order of magnitude above the rest
    axes[0].yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes[0].yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    axes[0].set_title(f"{method}: ■ baseline, ★ world defaults, ▲ paper, ● other settings; red: on the front",
                      fontsize=9, loc="left")
    return {"title": f"{method}: FD against FID and against CLIP-T, every studied setting", "uri": render(fig)}


def _robustness_figure(method: str, points: list[dict[str, Any]], render: Any) -> dict[str, str]:
    import matplotlib.pyplot as plt

    grids = list(dict.fromkeys((p["study"], p["knob"]) for p in points))
    fig, axes = plt.subplots(1, len(grids), figsize=(4.6 * len(grids), 3.6), squeeze=False)
    for ax, (study, knob) in zip(axes[0], grids, strict=True):
        mine = sorted((p for p in points if (p["study"], p["knob"]) == (study, knob)), key=lambda p: p["value"])
        xs = [p["value"] for p in mine]
        ax.errorbar(xs, [p["fd"] for p in mine], fmt="-o", color="tab:red", label=method, capsize=2,
                    yerr=[[p["fd"] - p["fd_low"] for p in mine], [p["fd_high"] - p["fd"] for p in mine]]
                    if all(_number(p["fd_low"]) and _number(p["fd_high"]) for p in mine) else None)
        if all(_number(p["baseline_fd"]) for p in mine):
            ax.plot(xs, [p["baseline_fd"] for p in mine], "-s", color="black", label="baseline")
        ax.set_xlabel(knob.replace("_", " "), fontsize=9)
        ax.set_ylabel("FD (lower is fairer)", fontsize=9)
        ax.set_title(f"study {study}", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    return {"title": f"{method}: FD across the sampler grids of " + ", ".join(s for s, _ in grids), "uri": render(fig)}


def _figures(method: str, rows: list[dict[str, Any]], points: list[dict[str, Any]], render: Any,
             memo: Any) -> list[dict[str, str]]:
    def draw() -> list[dict[str, str]]:
        return (([_front_figure(method, rows, render)] if len(rows) > 1 else [])
                + ([_robustness_figure(method, points, render)] if points else []))

    return draw() if memo is None else memo.get(["method", method, rows, points], draw)


def merged_hypervolume(rows: list[dict[str, Any]]) -> float | None:
    """The hypervolume (:func:`benchmark.study_fronts.hypervolume`) of all the method's settings in
    ``rows`` against their shared baseline: what every studied knob together reaches (no interval: the
    settings come from different runs; each study's own interval is in ``study_hypervolumes``)."""
    from benchmark.study_fronts import FID_LIMIT, hypervolume

    base = next((r for r in rows if r["kind"] == "baseline"), None)
    if base is None or not base.get("fd") or not _number(base.get("fid")) or not base["fid"]:
        return None
    pts = [(r["fd"] / base["fd"], r["fid"] / base["fid"]) for r in rows if r["kind"] != "baseline" and _number(r.get("fid"))]
    return hypervolume(pts, (1.0, FID_LIMIT)) if pts else None


def study_hypervolumes(studies: list[dict[str, Any]], method: str) -> list[str]:
    """Each study's hypervolume of the method at the profile's sampler, with its interval where it has one."""
    out = []
    for study in studies:
        for h in study.get("hypervolume") or []:
            if isinstance(h, dict) and h.get("method") == method and not h.get("sampler"):
                interval = (f" [{_f(h['hypervolume_low'], '.2f')}, {_f(h['hypervolume_high'], '.2f')}]"
                            if _number(h.get("hypervolume_low")) else "")
                out.append(f"{(study.get('study') or {}).get('name')} {_f(h['hypervolume'])}{interval} "
                           f"({h.get('settings')} settings)")
    return out


def _studies(row: dict[str, Any]) -> str:
    """Where a setting was measured (the baseline is in every study: its images are shared)."""
    names = list(dict.fromkeys(row["studies"]))
    if row["kind"] == "baseline":
        return f"every study ({len(names)})"
    return ", ".join(names[:2]) + (f" +{len(names) - 2}" if len(names) > 2 else "")


def method_views(studies: list[dict[str, Any]], render: Any = None, memo: Any = None) -> list[dict[str, Any]]:
    """One view per method for the page: the table of its settings across studies (front marks, kind),
    the worst FD over the sampler grids, and (with ``render``) the two figures, drawn through ``memo``
    (a :class:`leaderboard.figure_memo.FigureMemo`) when given."""
    fronts, robust = method_rows(studies), robustness_rows(studies)
    views = []
    for method in sorted(set(fronts) | set(robust)):
        scopes = fronts.get(method, {})
        rows = max(scopes.values(), key=len) if scopes else []  # the scope most of its studies share
        table = [[r["kind"] + (" *" if r.get("on_fid_front") and r["kind"] != "baseline" else ""),
                  f"{_f(r['fd'])} [{_f(r.get('fd_low'))}, {_f(r.get('fd_high'))}]",
                  "–" if r.get("delta_fd") is None else
                  f"{_f(r['delta_fd'], signed=True)} [{_f(r.get('delta_low'), signed=True)}, {_f(r.get('delta_high'), signed=True)}]",
                  _f(r.get("fid")), _f(r.get("clip_t"), ".2f"), _studies(r)]
                 for r in sorted(rows, key=lambda r: (r["kind"] != "baseline", r["fd"]))]
        points = robust.get(method, [])
        summary = []
        for study, knob in dict.fromkeys((p["study"], p["knob"]) for p in points):
            mine = [p for p in points if (p["study"], p["knob"]) == (study, knob)]
            w = max(mine, key=lambda p: p["fd"])
            base = [p["baseline_fd"] for p in mine if _number(p["baseline_fd"])]
            summary.append([study, knob.replace("_", " "),
                            ", ".join(f"{p['value']:g}" for p in sorted(mine, key=lambda p: p["value"])),
                            f"{_f(w['fd'])} (at {w['value']:g})", _f(min(p["fd"] for p in mine)),
                            _f(max(base)) if base else "–"])
        worst = [f"{row[3]} in {row[0]}" for row in summary]
        views.append({
            "method": method,
            "columns": ["setting (* on the FD–FID front)", "FD [95% CI]", "ΔFD vs baseline [95% CI]",
                        "FID", "CLIP-T", "study"],
            "rows": table,
            "robustness": {"columns": ["study", "sampler knob", "values", "worst FD", "best FD", "baseline's worst FD"],
                           "rows": summary},
            "worst": "; ".join(worst) or None,
            "hypervolume": merged_hypervolume(rows),
            "study_hypervolumes": study_hypervolumes(studies, method),
            "figures": [] if render is None else _figures(method, rows, points, render, memo),
        })
    return views


def across_methods(studies: list[dict[str, Any]], render: Any = None, memo: Any = None) -> dict[str, Any] | None:
    """Every method's settings at the profile's sampler in the scope most studies share, on one front:
    which method holds which part of the fairness–quality trade-off. A table of the settings on the
    FD–FID or FD–CLIP-T front (and the baseline) and, with ``render``, one figure of all of them."""
    scopes: dict[str, list[dict[str, Any]]] = {}
    for by_scope in method_rows(studies).values():
        for scope, rows in by_scope.items():
            have = scopes.setdefault(scope, [])
            have.extend(r for r in rows if r["kind"] != "baseline" or not any(h["kind"] == "baseline" for h in have))
    if not scopes:
        return None
    rows = [dict(r) for r in max(scopes.values(), key=len)]
    if len({r["method"] for r in rows if r["kind"] != "baseline"}) < 2:
        return None
    for name, other, sign in (("on_fid_front", "fid", 1.0), ("on_clip_front", "clip_t", -1.0)):
        have = [r for r in rows if _number(r.get(other))]
        for r, on in zip(have, front([(r["fd"], sign * r[other]) for r in have]), strict=True):
            r[name] = on
    shown = sorted((r for r in rows if r["kind"] == "baseline" or r.get("on_fid_front") or r.get("on_clip_front")),
                   key=lambda r: r["fd"])
    table = [[str(r["method"]), r["kind"], _f(r["fd"]), _f(r.get("fid")), _f(r.get("clip_t"), ".2f"),
              ", ".join(n for n, flag in (("FD–FID", "on_fid_front"), ("FD–CLIP-T", "on_clip_front")) if r.get(flag))]
             for r in shown]

    def draw() -> list[dict[str, str]]:
        return [_across_figure(rows, render)]

    figures = [] if render is None else (draw() if memo is None else memo.get(["across", rows], draw))
    return {"columns": ["method", "setting", "FD", "FID", "CLIP-T", "on the front of"], "rows": table,
            "settings": len(rows), "figures": figures}


def _across_figure(rows: list[dict[str, Any]], render: Any) -> dict[str, str]:
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    methods = list(dict.fromkeys(r["method"] for r in rows if r["kind"] != "baseline"))
    colour = {m: TOL_BRIGHT[i % (len(TOL_BRIGHT) - 1)] for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.4))
    for ax, other, flag, label in ((axes[0], "fid", "on_fid_front", "FID vs reference (lower is closer) ←"),
                                   (axes[1], "clip_t", "on_clip_front", "CLIP-T (higher is more on-prompt) →")):
        here = [r for r in rows if _number(r.get(other))]
        for r in here:
            base = r["kind"] == "baseline"
            ax.scatter(r["fd"], r[other], s=70 if r.get(flag) else 28, marker="s" if base else "o",
                       color="black" if base else colour[r["method"]], edgecolors="black" if r.get(flag) else "none",
                       linewidths=1.2, zorder=3)
        line = sorted((r for r in here if r.get(flag)), key=lambda r: r["fd"])
        ax.plot([r["fd"] for r in line], [r[other] for r in line], color="0.4", lw=1, ls="--", zorder=2)
        ax.set_xlabel("FD (lower is fairer) ←", fontsize=9)
        ax.set_ylabel(label, fontsize=9)
    axes[0].set_yscale("log")
    axes[0].yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes[0].yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    handles = [plt.Line2D([], [], marker="o", ls="", color=colour[m], label=m) for m in methods]
    handles.append(plt.Line2D([], [], marker="s", ls="", color="black", label="baseline"))
    axes[1].legend(handles=handles, fontsize=8, loc="lower right")
    axes[0].set_title("every studied setting; outlined and joined: on the front", fontsize=9, loc="left")
    return {"title": "Every method's studied settings on one fairness–quality front", "uri": render(fig)}
