"""The static leaderboard page: one self-contained HTML file (inline CSS and JS, images as data URIs).

The page opens from disk with no network: a Content-Security-Policy allows only data: images, inline
styles and the one inline script whose sha256 it names, so even markup that slipped through could not
run script or fetch anything. The script sorts tables and marks the body with ``data-ready`` and
``data-wide-tables`` (visible tables wider than the page), which the browser tests read. Every
string from a config, a run or a submission goes through Jinja2's
autoescaping; figure labels are made safe for matplotlib's mathtext. Sorting: click a header, or open
the page with ``#sort=<table-id>:<column>:<asc|desc>``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from benchmark import __version__
from benchmark.hashing import hash_file, hash_value
from benchmark.headline import HEADLINE_COLUMNS, cleam_warnings, headline_blocks
from leaderboard.charts import LABEL_CHARS, heat_maps, share_charts
from leaderboard.charts import label as short_label
from leaderboard.figure_memo import FigureMemo
from leaderboard.method_fronts import TOL_BRIGHT, across_methods, method_views
from leaderboard.rundir import FAMILIES, Run, load_run
from leaderboard.studies import study_figures, study_view
from leaderboard.submission import MANIFEST_FILE, entry_dirs, parse_sample_name
from leaderboard.tables import Table, build_tables, combined_metrics, format_ci, write_tables

TEMPLATES = Path(__file__).parent / "templates"
MAX_THUMB_COLUMNS = 12
MAX_THUMB_BYTES = 512 << 10
# Metrics whose tables are open on the page; the rest are one click away, which keeps it short.
OPEN_METRICS = ("fd", "fid", "clip_t")
TRADEOFF_COLORS = TOL_BRIGHT

SCRIPT = """
(function () {
  "use strict";
  window.addEventListener("error", function (e) { document.body.setAttribute("data-js-error", String(e.message)); });
  function key(cell) {
    var raw = cell ? cell.getAttribute("data-sort") : "";
    if (raw === null || raw === "") { return null; }
    var x = Number(raw);
    return isNaN(x) ? { s: raw.toLowerCase() } : { n: x };
  }
  function compare(a, b) {
    if (a.n !== undefined && b.n !== undefined) { return a.n - b.n; }
    if (a.n !== undefined) { return -1; }
    if (b.n !== undefined) { return 1; }
    return a.s < b.s ? -1 : (a.s > b.s ? 1 : 0);
  }
  function sortTable(table, col, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = key(r1.cells[col]), b = key(r2.cells[col]);
      if (a === null || b === null) { return (a === null) - (b === null); }  /* blanks last either way */
      var c = compare(a, b);
      return dir === "desc" ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.setAttribute("data-sorted", col + ":" + dir);
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) {
      heads[i].setAttribute("aria-sort", i === col ? (dir === "asc" ? "ascending" : "descending") : "none");
    }
  }
  window.debiasBenchSort = sortTable;
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () {
        var now = table.getAttribute("data-sorted");
        sortTable(table, col, now === col + ":asc" ? "desc" : "asc");
      });
    });
  });
  function fromHash() {
    var m = /^#sort=([A-Za-z0-9_-]+):(\\d+):(asc|desc)$/.exec(window.location.hash);
    if (!m) { return; }
    var table = document.getElementById(m[1]);
    if (table && table.tHead && Number(m[2]) < table.tHead.rows[0].cells.length) { sortTable(table, Number(m[2]), m[3]); }
  }
  fromHash();
  window.addEventListener("hashchange", fromHash);
  /* a layout self-check the browser tests read: tables that stick out of the page, by id or class */
  var right = document.body.getBoundingClientRect().right, wide = [];
  Array.prototype.forEach.call(document.querySelectorAll("table"), function (t) {
    if (t.offsetParent !== null && t.getBoundingClientRect().right > right + 1) { wide.push(t.id || t.className || "table"); }
  });
  document.body.setAttribute("data-wide-tables", wide.join(" "));
  document.body.setAttribute("data-ready", "1");
})();
"""
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True))


def plot_label(text: object, limit: int = LABEL_CHARS) -> str:
    """A label matplotlib draws literally: ``$`` would start mathtext (and can raise on bad input)."""
    return short_label(text, limit).replace("\\", "\\\\").replace("$", r"\$")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --- tables ----------------------------------------------------------------------------------------


def _num(x: Any) -> str:
    if x is None:
        return ""
    x = float(x)
    return "" if math.isnan(x) else repr(x)


def table_view(table: Table, index: int) -> dict[str, Any]:
    f = table.frame
    columns = ["method", "rank"] + [f"{v}*" if v == table.headline else v for v in table.variants] + ["n"]
    rows = []
    for label, row in f.iterrows():
        cells = [{"text": label, "sort": label}, {"text": _rank_text(row["rank"]), "sort": _num(row["rank"])}]
        for v in table.variants:
            cells.append({"text": format_ci(row[v], row[f"{v} ci_low"], row[f"{v} ci_high"]), "sort": _num(row[v])})
        cells.append({"text": _rank_text(row["n"]), "sort": _num(row["n"])})
        rows.append({"cells": cells, "best": row["rank"] == 1})
    per = None
    if not table.per_prompt.empty:
        pp = table.per_prompt
        per = {
            "columns": ["method", *[str(c) for c in pp.columns]],
            "rows": [[{"text": label, "sort": label}]
                     + [{"text": "–" if pd.isna(x) else f"{x:.3f}", "sort": _num(x)} for x in r.tolist()]
                     for label, r in pp.iterrows()],
        }
    return {
        "id": f"t{index}-{table.key}"[:90],
        "title": table.title,
        "metric": table.metric,
        "higher_is_better": table.higher_is_better,
        "headline": table.headline,
        "columns": columns,
        "rows": rows,
        "per_prompt": per,
        "collapsed": table.metric not in OPEN_METRICS,
    }


COST_COLUMNS = ["method", "UNet evaluations per image", "× baseline", "seconds per image", "× baseline",
                "training (s)", "seconds timed on"]


def _finite(x: Any) -> float | None:
    """A finite number from an untrusted results file, else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def timed_on(results: dict[str, Any], cost: dict[str, Any]) -> str:
    """Where a method's seconds per image were measured: this run's machine when it generated the
    images, else an earlier run whose cached timings it read (machine not recorded per image)."""
    machine = ((results.get("execution") or {}).get("machine") or {})
    here = ", ".join(str(x) for x in (machine.get("cpu"), f"{machine.get('cores')} cores" if machine.get("cores") else None,
                                       machine.get("gpu")) if x) or "this run's machine"
    generated = _finite(cost.get("generated")) or 0
    timed = _finite(cost.get("timed_images")) or 0
    if timed == 0:
        return "–"
    if generated >= timed:
        return here
    return f"{here} ({int(generated)} of {int(timed)} images; the rest timed by an earlier run)" if generated \
        else "an earlier run (timings read from the cache)"


def cost_view(runs: list[Run]) -> dict[str, Any]:
    """One row per run and method from ``results.json → cost``: UNet evaluations and seconds per
    image, each also relative to the same run's baseline, and the training time recorded when the
    method's artefacts were made. Seconds depend on the machine; the evaluations do not."""
    rows = []
    for run in runs:
        cost = run.results.get("cost")
        if not isinstance(cost, dict):
            continue
        name = (run.results.get("config") or {}).get("baseline", "baseline")
        base = cost.get(name) if isinstance(cost.get(name), dict) else {}
        for method in sorted(m for m, c in cost.items() if isinstance(c, dict)):
            c = cost[method]
            values = []
            for field in ("unet_evals_per_image", "seconds_per_image"):
                own, ref = _finite(c.get(field)), _finite(base.get(field))
                values += [own, own / ref if own is not None and ref else None]
            values.append(_finite(c.get("train_seconds")))
            label = method if len(runs) == 1 else f"{method} · {run.label}"
            cells = [{"text": label, "sort": label}]
            for value, digits in zip(values, (0, 2, 3, 2, 0), strict=True):
                cells.append({"text": "–" if value is None else f"{value:.{digits}f}", "sort": _num(value)})
            where = timed_on(run.results, c)
            cells.append({"text": where, "sort": where})
            rows.append({"cells": cells})
    return {"columns": COST_COLUMNS, "rows": rows}


def _rank_text(x: Any) -> str:
    return "–" if x is None or pd.isna(x) else str(int(x))


# --- figures ---------------------------------------------------------------------------------------


FIGURE_CACHE = ".figures.json"  # beside report.html / index.html: figures drawn for the current content
STUDY_FIGURE_CACHE = ".study-figures.json"  # beside it: study and per-method figures


@dataclass
class Figure:
    title: str
    uri: str


@functools.cache
def plot_style() -> None:
    """matplotlib off-screen with the page's seaborn theme: imported and set only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")


def _render(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return _data_uri(buf.getvalue())


def _headline_points(df: pd.DataFrame, metric: str, variants: tuple[str, ...]) -> pd.DataFrame:
    part = df[(df["metric"] == metric) & df["prompt_id"].isna()]
    for v in variants:
        hit = part[part["variant"] == v]
        if len(hit):
            return hit
    return part.iloc[0:0] if part.empty else part[part["variant"] == part["variant"].iloc[0]]


def tradeoff_figures(df: pd.DataFrame) -> tuple[list[Figure], list[str]]:
    """FD (soft, set level) against FID and against CLIP-T, with both intervals as error bars."""
    notes: list[str] = []
    if df.empty:
        return [], notes
    plot_style()
    import matplotlib.pyplot as plt

    figures = []
    fd_points = _headline_points(df, "fd", ("soft", "hard"))
    # Intersectional FD repeats its marginals' story; one trade-off plot per plain attribute suffices.
    fd_points = fd_points[~fd_points["attribute"].astype(str).str.contains("×")]
    for (ps, cname, attr), fd in fd_points.groupby(["prompt_set", "classifier", "attribute"], sort=False):
        panels = []
        for metric, name, variants in (("fid", "FID", ("vs-reference", "vs-baseline")), ("clip_t", "CLIP-T", ("soft",))):
            other = _headline_points(df[df["prompt_set"] == ps], metric, variants)
            joined = fd.merge(other, on="row", suffixes=("_fd", "_q"))
            if joined.empty:
                notes.append(f"{ps} · {attr}: no {name} records, so no FD vs {name} plot")
                continue
            panels.append((name, joined))
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
        # a colour-blind-safe palette of distinct hues (no two oranges), and each point labelled where it is drawn
        n = max(len(p[1]) for p in panels)
        colors = [TRADEOFF_COLORS[i % len(TRADEOFF_COLORS)] for i in range(n)]
        for ax, (name, joined) in zip(axes[0], panels, strict=True):
            for color, (_, r) in zip(colors, joined.iterrows(), strict=False):
                xerr = _err(r["value_fd"], r["ci_low_fd"], r["ci_high_fd"])
                yerr = _err(r["value_q"], r["ci_low_q"], r["ci_high_q"])
                ax.errorbar(r["value_fd"], r["value_q"], xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=3,
                            label=plot_label(r["row"]))
                ax.annotate(plot_label(r["row"], 24), (r["value_fd"], r["value_q"]), textcoords="offset points",
                            xytext=(5, 5), fontsize=10, color=color)
            ax.set_xlabel(plot_label(f"FD ({attr}, {joined['variant_fd'].iloc[0]}) ← lower is fairer", 60), fontsize=11)
            better = "higher" if bool(joined["higher_is_better_q"].iloc[0]) else "lower"
            ax.set_ylabel(f"{name} ({better} is better)", fontsize=11)
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.02, 0.5))
        figures.append(Figure(f"{ps} · {attr} ({cname}): FD vs " + " and ".join(p[0] for p in panels)
                              + " with 95 % intervals", _render(fig)))
    return figures, notes


def _err(value: float, lo: float, hi: float) -> list[list[float]] | None:
    if pd.isna(lo) or pd.isna(hi):
        return None
    return [[max(value - lo, 0.0)], [max(hi - value, 0.0)]]


# --- thumbnails and provenance ---------------------------------------------------------------------


def _thumbnail_index(run: Run) -> list[dict[str, Any]]:
    """[{method, prompt_set, prompt_id, index, path}] for a run directory or a leaderboard entry."""
    manifest_path = run.path / MANIFEST_FILE
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        return [{**t, "path": run.path / t["file"]} for t in manifest.get("thumbnails", []) if t.get("method")]
    out = []
    samples = run.path / "samples"
    if samples.is_dir():
        for p in sorted(samples.glob("*.png")):
            fields = parse_sample_name(p.name)
            if fields and not p.is_symlink():
                out.append({**fields, "path": p})
    return out


def _thumbnail_columns(runs: list[Run], ps: str, part: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(prompt, image index) columns: prompts in the prompt set's order with plain prompts (naming no
    class) first, one image of each before a second of any, so the grid shows as many prompts as fit."""
    declared = [p for run in runs for p in (run.results.get("prompt_sets", {}).get(ps, {}).get("prompts") or [])]
    order = {p["id"]: (bool(p.get("named")), i) for i, p in enumerate(declared) if isinstance(p, dict)}
    present = sorted({i["prompt_id"] for i in part}, key=lambda pid: order.get(pid, (True, len(order))) + (pid,))
    indices = {pid: sorted({i["index"] for i in part if i["prompt_id"] == pid}) for pid in present}
    cols = [(pid, idx[k]) for k in range(max((len(v) for v in indices.values()), default=0))
            for pid, idx in indices.items() if k < len(idx)]
    return cols[:MAX_THUMB_COLUMNS]


def _method_order(run: Run) -> dict[str, int]:
    """A run's methods in its config's order, the baseline first (rows of the sample grid)."""
    cfg = run.results.get("config") or {}
    keys = [m.get("label") or m.get("name") for m in cfg.get("methods") or [] if isinstance(m, dict)]
    keys = [k for k in keys if isinstance(k, str)]
    base = cfg.get("baseline", "baseline")
    return {k: i for i, k in enumerate(sorted(dict.fromkeys(keys), key=lambda k: k != base))}


def thumbnail_grids(runs: list[Run], labels: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
    """One grid per prompt set: a row per method (each run's baseline first, then its config's order), a
    column per prompt and image index (:func:`_thumbnail_columns`); every image names its seed."""
    items = []
    for run_index, run in enumerate(runs):
        order = _method_order(run)
        pred = run.predictions()
        seeds = {}
        if pred is not None and "seed" in pred.columns:
            seeds = {(m, ps, pid, int(i)): int(s) for m, ps, pid, i, s in
                     pred[["method", "prompt_set", "prompt_id", "index", "seed"]].itertuples(index=False)}
        for t in _thumbnail_index(run):
            if not t["path"].is_file() or t["path"].stat().st_size > MAX_THUMB_BYTES:
                continue
            key = (t["method"], t["prompt_set"], t["prompt_id"], t["index"])
            items.append({**t, "row": labels.get((run.label, t["method"]), t["method"]), "seed": seeds.get(key),
                          "order": (run_index, order.get(t["method"], len(order)), t["method"])})
    grids = []
    for ps in dict.fromkeys(i["prompt_set"] for i in items):
        part = [i for i in items if i["prompt_set"] == ps]
        cols = _thumbnail_columns(runs, ps, part)
        rows = list(dict.fromkeys(i["row"] for i in sorted(part, key=lambda i: i["order"])))
        by_key = {(i["row"], i["prompt_id"], i["index"]): i for i in part}
        seeds: dict[tuple[str, int], set[int]] = {}
        for i in part:
            if i["seed"] is not None:
                seeds.setdefault((i["prompt_id"], i["index"]), set()).add(i["seed"])
        grid_rows = []
        for r in rows:
            images = []
            for pid, idx in cols:
                hit = by_key.get((r, pid, idx))
                seed = "" if hit is None or hit["seed"] is None else f" · seed {hit['seed']}"
                images.append(None if hit is None else {"uri": _data_uri(hit["path"].read_bytes()),
                                                        "alt": f"{r} · {pid} #{idx}{seed}"})
            grid_rows.append({"label": r, "images": images})
        # a column is one seed for every method; were it not, the header says so rather than name one
        columns = [f"{pid} #{idx}" + ("" if (pid, idx) not in seeds else f" (seed {min(seeds[(pid, idx)])})"
                                      if len(seeds[(pid, idx)]) == 1 else " (seeds differ across methods)")
                   for pid, idx in cols]
        grids.append({"title": f"prompt set {ps}", "columns": columns, "rows": grid_rows})
    return grids


def _entry_info(run: Run) -> dict[str, Any]:
    path = run.path / "entry.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def provenance(run: Run) -> dict[str, Any]:
    r = run.results
    cfg = r.get("config") or {}
    base = ((r.get("models") or {}).get("base") or {})
    info = _entry_info(run)
    facts = [
        *([("label", info["label"])] if info.get("label") else []),
        ("run id", run.run_id),
        ("model", base.get("name", "") if isinstance(base, dict) else ""),
        *([("code", info["code"])] if info.get("code") else []),
        ("created", r.get("created", "")),
        ("debias-bench", (r.get("versions") or {}).get("debias-bench", "")),
        ("profile", cfg.get("profile", "")),
        ("seed", cfg.get("seed", "")),
        ("bootstrap", f"{(cfg.get('metrics') or {}).get('bootstrap', '')} resamples, seed "
                      f"{(cfg.get('metrics') or {}).get('seed', '')}"),
    ]
    for ps, ps_info in (r.get("prompt_sets") or {}).items():
        facts.append((f"prompt set {ps}", f"sha256 {ps_info.get('fingerprint', '')}"))
    if info:
        facts += [("bundle sha256", info.get("bundle_sha256", "")), ("accepted", info.get("accepted", "")),
                  ("metrics recomputed by the check", info.get("verified_metrics", "")),
                  ("metrics as reported (not recomputable)", ", ".join(info.get("reported_metrics") or []) or "none"),
                  ("thumbnails recomputed from their pixels", info.get("thumbnails_checked", 0))]
    manifest = run.path / MANIFEST_FILE
    files = ""
    if manifest.is_file():
        files = json.dumps(json.loads(manifest.read_text(encoding="utf-8")).get("files", {}), indent=1, sort_keys=True)
    failures = [f"{f.get('method')} / {f.get('prompt_set')} / {f.get('prompt_id')} ({f.get('stage')}): {f.get('error')}"
                for f in (r.get("failures") or []) if isinstance(f, dict)]
    return {
        "label": f"{run.label}",
        "facts": [(k, str(v)) for k, v in facts],
        "versions": json.dumps(r.get("versions", {}), indent=1, sort_keys=True),
        "models": json.dumps(r.get("models", {}), indent=1, sort_keys=True, default=str),
        "config": json.dumps(cfg, indent=1, sort_keys=True, default=str),
        "files": files,
        "failures": failures,
        "prompts": [(ps, str(p.get("id")), str(p.get("text")))
                    for ps, info in (r.get("prompt_sets") or {}).items() for p in info.get("prompts") or []
                    if isinstance(p, dict)],
    }


# --- the page --------------------------------------------------------------------------------------


def all_figures(runs: list[Run], df: pd.DataFrame, labels: dict[tuple[str, str], str],
                cache: Path | None = None) -> tuple[list[Figure], list[str]]:
    """Every figure of the page, and notes on figures that could not be drawn.

    With ``cache`` (a JSON file), figures are drawn once per content: the key hashes what they are drawn
    from (each run's metrics, the labels, this file), so re-writing the report of a re-scored run with
    the same numbers reuses them."""
    key = _figures_key(runs, labels) if cache is not None else None
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text(encoding="utf-8"))
            if stored.get("key") == key:
                return [Figure(**f) for f in stored["figures"]], list(stored["notes"])
        except (OSError, ValueError, TypeError, KeyError):
            pass  # an unreadable cache is redrawn
    figures, notes = tradeoff_figures(df) if len(df) else ([], [])
    if cache is not None:
        _atomic_write_text(cache, json.dumps({"key": key, "figures": [vars(f) for f in figures], "notes": notes}))
    return figures, notes


def _figures_key(runs: list[Run], labels: dict[tuple[str, str], str]) -> str:
    parts = []
    for run in runs:  # the figures are drawn from the records alone (the class shares are HTML)
        parts.append({"metrics": hash_value(run.results.get("metrics") or []), "entry": run.entry_id})
    # the drawing code is part of the content: a change to this file redraws
    return hash_value({"runs": parts, "labels": sorted(map(list, labels.items())), "code": hash_file(Path(__file__))})


def headline_views(runs: list[Run]) -> list[dict[str, Any]]:
    """The headline (:func:`benchmark.headline.headline_blocks`) of every run, prompt set and attribute."""
    return [{"title": f"{run.label} · {ps} · {attr} · classifier {classifier}", "key": f"{ps}/{attr}", "rows": rows,
             "columns": HEADLINE_COLUMNS}
            for run in runs for ps, attr, classifier, rows in headline_blocks(run.results)]


def page_inputs(runs: list[Run]) -> tuple[pd.DataFrame, dict[tuple[str, str], str], list[Table]]:
    """The runs' metrics as one frame, each (entry, method)'s row label, and the page's tables."""
    df = combined_metrics(runs)
    return df, row_labels(df), build_tables(df)


def row_labels(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Each (entry, method)'s row label in the combined records."""
    return {(e, m): r for e, m, r in df[["entry", "method", "row"]].drop_duplicates().itertuples(index=False)} if len(df) else {}


def render_page(runs: list[Run], title: str = "debias-bench leaderboard", subtitle: str = "",
                figure_cache: Path | None = None, studies: list[dict[str, Any]] | None = None) -> tuple[str, list[Table]]:
    """The page's HTML and the tables it shows (``figure_cache``: see :func:`all_figures`)."""
    df, labels, tables = page_inputs(runs)
    figures, notes = all_figures(runs, df, labels, figure_cache)
    memo = FigureMemo(figure_cache.with_name(STUDY_FIGURE_CACHE) if figure_cache is not None and studies else None,
                      before_draw=plot_style)
    families = sorted({FAMILIES.get(t.metric, "other") for t in tables})
    html = _env().get_template("page.html.j2").render(
        title=title,
        subtitle=subtitle or f"{len(runs)} run(s) · {len(tables)} tables · families: {', '.join(families) or 'none'}",
        tables=[table_view(t, i) for i, t in enumerate(tables)],
        cost=cost_view(runs),
        studies=[{**study_view(s), "figures": memo.get(["study", s.get("rows")],
                                                       lambda s=s: study_figures([r for r in s["rows"] if isinstance(r, dict)], _render))}
                 for s in studies or []],
        **_method_fronts(studies or [], memo),
        headlines=headline_views(runs),
        headline_notes=[f"{run.label}: {w}" for run in runs for w in cleam_warnings(run.results)],
        share_charts=share_charts(runs, labels),
        figures=figures,
        heat_maps=heat_maps(tables),
        figure_notes=notes,
        thumbnails=thumbnail_grids(runs, labels),
        provenance=[provenance(r) for r in runs],
        script=SCRIPT,
        script_hash=SCRIPT_HASH,
        version=__version__,
    )
    memo.save()
    return html, tables


def _method_fronts(studies: list[dict[str, Any]], memo: FigureMemo) -> dict[str, Any]:
    """Each method's view and the one across methods, once per content of the studies and of the methods'
    code (their defaults name the settings)."""
    if not studies:
        return {"method_views": [], "across": None}
    root = Path(__file__).resolve().parents[1]
    code = [hash_file(p) for p in [*sorted((root / "methods").glob("*.py")), root / "benchmark" / "study_fronts.py",
                                   Path(__file__)]]
    return memo.get(["method-fronts", studies, code],
                    lambda: {"method_views": method_views(studies, _render), "across": across_methods(studies, _render)},
                    kind=dict)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def render_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (the full page for one run) and return its path."""
    run = load_run(run_dir)
    html, _ = render_page([run], title=f"debias-bench run {run.run_id}", figure_cache=run.path / FIGURE_CACHE)
    out = run.path / "report.html"
    _atomic_write_text(out, html)
    return out


def load_entries(entries_dir: str | Path) -> list[Run]:
    """Every entry as a run, named by its submitter's label where that tells entries apart, else its folder."""
    runs = []
    for d in entry_dirs(entries_dir):
        run = load_run(d)
        run.entry_id = d.name
        runs.append(run)
    labels = [_entry_info(r).get("label") for r in runs]
    for run, label in zip(runs, labels, strict=True):
        if label and labels.count(label) == 1:
            run.entry_id = str(label)
    return runs


def draw_figures(entries_dir: str | Path, figure_cache: Path) -> None:
    """Only the figures of the page for ``entries_dir``, into the memo ``figure_cache`` (see :func:`all_figures`)."""
    runs = load_entries(entries_dir)
    df = combined_metrics(runs)  # the figures need the records, not the tables
    figure_cache.parent.mkdir(parents=True, exist_ok=True)
    all_figures(runs, df, row_labels(df), figure_cache)


def build_leaderboard(entries_dir: str | Path, out_dir: str | Path, studies_dir: str | Path | None = None) -> Path:
    """Render every entry in ``entries_dir`` (and every study in ``studies_dir``, default: ``studies``
    beside the entries) to ``out_dir/index.html`` plus ``out_dir/tables/*``."""
    from leaderboard.studies import load_studies

    runs = load_entries(entries_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    studies = load_studies(Path(entries_dir).parent / "studies" if studies_dir is None else studies_dir)
    html, tables = render_page(runs, subtitle=f"{len(runs)} entr{'y' if len(runs) == 1 else 'ies'}"
                               + (f" · {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}" if studies else ""),
                               figure_cache=out / FIGURE_CACHE, studies=studies)
    write_tables(tables, out / "tables")
    page = out / "index.html"
    _atomic_write_text(page, html)
    return page
