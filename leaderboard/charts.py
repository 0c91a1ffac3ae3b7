"""The page's class-share bars and per-prompt heat maps, drawn in HTML rather than as images.

Both are a grid of numbers with colour: as markup they cost milliseconds instead of seconds of
matplotlib, stay sharp at any zoom, and a reader can hover a bar or cell for its exact value. They
are data for the page template (``share_charts`` and ``heat_maps``); every string in them is escaped
there, and every colour comes from this module (never from a run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leaderboard.rundir import Run, probability_columns
from leaderboard.tables import Table

MAX_PROMPTS = 12  # columns of one chart
LABEL_CHARS = 32
GREYS = {"light": "#d9d9d9", "mid": "#8c8c8c", "dark": "#303030"}
# seaborn's "colorblind" palette, for classes whose names are not colours
COLORBLIND = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
              "#56b4e9"]
HEAT_CMAP = "magma_r"  # light = fair, dark = biased; the scale starts at 0


def label(text: object, limit: int = LABEL_CHARS) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def class_colors(classes: list[str]) -> list[str]:
    """A CSS colour per class: the class's own colour when its name is one (red, blue, ...), greys for
    light/mid/dark, else the colour-blind-safe palette."""
    from matplotlib.colors import CSS4_COLORS

    fallback = iter(COLORBLIND * (len(classes) // len(COLORBLIND) + 1))
    out = []
    for cls in classes:
        name = str(cls).lower()
        if name in GREYS:
            out.append(GREYS[name])
        elif name in CSS4_COLORS and name != "white":
            out.append(CSS4_COLORS[name].lower())
        else:
            out.append(next(fallback))
    return out


@dataclass
class ShareChart:
    """Mean predicted class shares: a row per method, a stacked bar per prompt, dashed fair shares."""

    title: str
    prompts: list[str]
    classes: list[dict[str, str]]  # {"label", "color"}
    rows: list[dict[str, Any]]  # {"label", "bars": [{"text", "segments": [{"color", "pct"}]}]}
    fair: list[float] = field(default_factory=list)  # % positions of the uniform shares' boundaries


def _mean_shares(runs: list[Run], labels: dict[tuple[str, str], str]) -> pd.DataFrame:
    frames = []
    for run in runs:
        pred = run.predictions()
        if pred is None or pred.empty:
            continue
        for (cname, attr), cols in probability_columns(list(pred.columns)).items():
            means = pred.groupby(["prompt_set", "method", "prompt_id"], sort=False)[[c for _, c in cols]].mean()
            means.columns = [k for k, _ in cols]
            long = means.reset_index().melt(id_vars=["prompt_set", "method", "prompt_id"], var_name="class",
                                            value_name="share")
            long["row"] = [labels.get((run.label, m), m) for m in long["method"]]
            long["classifier"], long["attribute"] = cname, attr
            frames.append(long)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def share_charts(runs: list[Run], labels: dict[tuple[str, str], str]) -> list[ShareChart]:
    """One chart per (prompt set, classifier, attribute) of the runs' predictions."""
    df = _mean_shares(runs, labels)
    charts = []
    for (ps, cname, attr), part in (df.groupby(["prompt_set", "classifier", "attribute"], sort=False) if len(df) else []):
        prompts = list(dict.fromkeys(part["prompt_id"]))[:MAX_PROMPTS]
        rows = list(dict.fromkeys(part["row"]))
        classes = list(dict.fromkeys(part["class"]))
        colors = class_colors(classes)
        grid = part.pivot_table(index=["row", "prompt_id"], columns="class", values="share", sort=False)
        grid = grid.reindex(columns=classes).fillna(0.0)
        body = []
        for row in rows:
            bars = []
            for pid in prompts:
                if (row, pid) not in grid.index:  # this method has no images of this prompt
                    bars.append({"text": f"{label(row)} · {label(pid)}: no images", "segments": []})
                    continue
                shares = grid.loc[(row, pid)].to_numpy(dtype=float)
                text = f"{label(row)} · {label(pid)}: " + ", ".join(f"{label(c)} {s:.2f}" for c, s in zip(classes, shares, strict=True))
                bars.append({"text": text, "segments": [{"color": col, "pct": round(100 * float(s), 2)}
                                                        for col, s in zip(colors, shares, strict=True) if s > 0]})
            body.append({"label": label(row), "bars": bars})
        fair = [round(100 * i / len(classes), 2) for i in range(1, len(classes))]
        charts.append(ShareChart(f"{ps} · {attr} ({cname}): class distribution per method and prompt",
                                 [label(p, 20) for p in prompts],
                                 [{"label": label(c), "color": col} for c, col in zip(classes, colors, strict=True)],
                                 body, fair))
    return charts


@dataclass
class HeatMap:
    """A table's per-prompt values, each cell coloured on one scale from 0 to the map's largest value."""

    title: str
    unit: str
    columns: list[str]
    rows: list[dict[str, Any]]  # {"label", "cells": [{"text", "bg", "fg"}]}
    scale: list[dict[str, str]]  # the legend: {"text", "bg", "fg"} from 0 to the largest value


def _color(cmap: Any, x: float) -> tuple[str, str]:
    """(background, text) for a position in [0, 1]: black text on light cells, white on dark."""
    r, g, b, _ = cmap(float(x))
    bg = "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (r, g, b)))
    return bg, ("#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "#ffffff")


def heat_maps(tables: list[Table]) -> list[HeatMap]:
    """Per-prompt FD (the table's headline variant) as methods × prompts, one map per attribute; one
    row order in every map (the baseline first, then by name), not each table's ranking."""
    from matplotlib import colormaps

    cmap = colormaps[HEAT_CMAP]
    maps = []
    for t in tables:
        if t.metric != "fd" or t.per_prompt.empty:
            continue
        data = t.per_prompt.iloc[:, :MAX_PROMPTS].astype(float)
        data = data.loc[sorted(data.index, key=lambda r: (not str(r).startswith("baseline"), str(r)))]
        finite = data.to_numpy()[np.isfinite(data.to_numpy())]
        top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        rows = []
        for name, values in data.iterrows():
            cells = []
            for v in values.to_numpy():
                if not np.isfinite(v):
                    cells.append({"text": "–", "bg": "#ffffff", "fg": "#5a6475"})
                    continue
                bg, fg = _color(cmap, v / top)
                cells.append({"text": f"{v:.2f}", "bg": bg, "fg": fg})
            rows.append({"label": label(name), "cells": cells})
        scale = []
        for x in np.linspace(0.0, top, 6):
            bg, fg = _color(cmap, x / top)
            scale.append({"text": f"{x:.2f}", "bg": bg, "fg": fg})
        maps.append(HeatMap(f"{label(t.title, 90)}: per-prompt heat map", f"FD ({t.headline})",
                            [label(c, 16) for c in data.columns], rows, scale))
    return maps


__all__ = ["HeatMap", "ShareChart", "class_colors", "heat_maps", "share_charts"]
