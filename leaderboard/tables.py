"""Metric tables: one per (prompt set, classifier, attribute, metric), methods as rows.

Each table shows every variant of its metric as ``value [ci_low, ci_high]`` (95 % bootstrap interval),
ranks methods on the headline variant in the metric's declared direction (``higher_is_better`` in
every record, the HELM-style schema idea), and carries a per-prompt breakdown of the headline
variant. Tables export to CSV, JSON, Markdown and LaTeX.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leaderboard.rundir import FAMILIES, METRIC_ORDER, Run

# The headline variant is the first of these a metric has; soft FD is what most papers report.
HEADLINE_VARIANTS = ["soft", "proportion-gap", "vs-reference", "hard"]
METRIC_NAMES = {
    "fd": "FD",
    "spd": "SPD",
    "entropy": "normalised entropy",
    "kl": "KL",
    "deviation_ratio": "deviation ratio",
    "invdiff_bias": "InvDiff bias",
    "fid": "FID",
    "kid": "KID",
    "clip_t": "CLIP-T",
    "clip_i": "CLIP-I",
    "no_subject_rate": "no-subject rate",
    "unet_evals": "UNet evaluations per image",
    "seconds_per_image": "seconds per image",
}


@dataclass
class Table:
    """One leaderboard table. ``frame`` is indexed by row label (method, or method · entry)."""

    key: str
    prompt_set: str
    classifier: str | None
    attribute: str | None
    metric: str
    higher_is_better: bool
    variants: list[str]
    headline: str
    frame: pd.DataFrame
    per_prompt: pd.DataFrame

    @property
    def family(self) -> str:
        return FAMILIES.get(self.metric, "other")

    @property
    def title(self) -> str:
        parts = [self.prompt_set]
        if self.attribute:
            parts.append(f"{self.attribute} ({self.classifier})" if self.classifier else self.attribute)
        elif self.classifier:  # e.g. the no-subject rate, once per classifier: the title names which
            parts.append(f"classifier {self.classifier}")
        arrow = "higher is better" if self.higher_is_better else "lower is better"
        return f"{' · '.join(parts)} · {METRIC_NAMES.get(self.metric, self.metric)} ({arrow})"

    def display_frame(self, digits: int = 3) -> pd.DataFrame:
        """Formatted cells ``value [lo, hi]``, the rank first; for Markdown, LaTeX and HTML."""
        out = pd.DataFrame(index=self.frame.index)
        out["rank"] = [_fmt_rank(r) for r in self.frame["rank"]]
        for v in self.variants:
            out[v] = [
                format_ci(val, lo, hi, digits)
                for val, lo, hi in zip(self.frame[v], self.frame[f"{v} ci_low"], self.frame[f"{v} ci_high"], strict=True)
            ]
        out["n"] = [_fmt_rank(x) for x in self.frame["n"]]
        return out


def format_ci(value: float, lo: float, hi: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def _fmt_rank(rank: float) -> str:
    return "–" if rank is None or (isinstance(rank, float) and math.isnan(rank)) else str(int(rank))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "x"


def combined_metrics(runs: Iterable[Run]) -> pd.DataFrame:
    """All runs' records in one long frame, with a ``row`` label unique per (entry, method)."""
    frames = [run.metrics() for run in runs]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["row", "entry"])
    df = pd.concat(frames, ignore_index=True)
    pairs = df[["entry", "method"]].drop_duplicates()
    clash = pairs["method"].duplicated(keep=False)
    labels = {
        (e, m): (f"{m} · {e}" if c else m) for e, m, c in zip(pairs["entry"], pairs["method"], clash, strict=True)
    }
    df["row"] = [labels[(e, m)] for e, m in zip(df["entry"], df["method"], strict=True)]
    return df


def _headline(variants: list[str]) -> str:
    for v in HEADLINE_VARIANTS:
        if v in variants:
            return v
    return variants[0]


def _metric_sort_key(metric: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), metric)


def build_tables(runs: Iterable[Run] | pd.DataFrame) -> list[Table]:
    """One :class:`Table` per (prompt set, classifier, attribute, metric) found in the runs."""
    df = runs if isinstance(runs, pd.DataFrame) else combined_metrics(runs)
    if df.empty:
        return []
    df = df.copy()
    df["variant"] = df["variant"].fillna("").astype(str)
    for col in ("classifier", "attribute"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    keyed = df.assign(_c=df["classifier"].fillna(""), _a=df["attribute"].fillna(""))
    tables: list[Table] = []
    for (ps, cls, attr, metric), part in keyed.groupby(["prompt_set", "_c", "_a", "metric"], sort=False):
        tables.append(_one_table(str(ps), cls or None, attr or None, str(metric), part))
    # Fairness first (what the benchmark is about), then quality, alignment, coverage and cost.
    families = list(dict.fromkeys(FAMILIES.values()))
    tables.sort(key=lambda t: (t.prompt_set, families.index(t.family) if t.family in families else len(families),
                               t.classifier or "", t.attribute or "", _metric_sort_key(t.metric)))
    return tables


def _one_table(ps: str, cls: str | None, attr: str | None, metric: str, part: pd.DataFrame) -> Table:
    higher = bool(part["higher_is_better"].iloc[0])
    headline = _headline(sorted(part["variant"].unique()))
    variants = sorted(part["variant"].unique(), key=lambda v: (v != headline, v))
    rows = list(dict.fromkeys(part["row"]))
    overall = part[part["prompt_id"].isna()]
    frame = pd.DataFrame(index=pd.Index(rows, name="method"))
    for v in variants:
        sub = overall[overall["variant"] == v].drop_duplicates("row", keep="last").set_index("row")
        frame[v] = sub["value"].reindex(rows).astype(float)
        frame[f"{v} ci_low"] = sub["ci_low"].reindex(rows).astype(float)
        frame[f"{v} ci_high"] = sub["ci_high"].reindex(rows).astype(float)
    head = overall[overall["variant"] == headline].drop_duplicates("row", keep="last").set_index("row")
    frame["n"] = pd.to_numeric(head["n"], errors="coerce").reindex(rows).astype(float)
    frame["rank"] = frame[headline].rank(ascending=not higher, method="min")
    frame = frame.sort_values(["rank"], na_position="last", kind="stable")
    per = part[part["prompt_id"].notna() & (part["variant"] == headline)]
    per_prompt = per.pivot_table(index="row", columns="prompt_id", values="value", aggfunc="last", sort=False)
    per_prompt = per_prompt.reindex(index=[r for r in frame.index if r in per_prompt.index])
    per_prompt.index.name = "method"
    per_prompt.columns.name = None
    key = slug("-".join(x for x in (ps, cls, attr, metric) if x))
    return Table(key, ps, cls, attr, metric, higher, variants, headline, frame, per_prompt)


# --- exports -------------------------------------------------------------------------------------


def to_json(table: Table) -> str:
    """The table as JSON: its declaration (metric, direction, headline) and one object per method."""
    rows = []
    for label, row in table.frame.iterrows():
        item = {"method": label, "rank": _none(row["rank"]), "n": _none(row["n"])}
        item["variants"] = {
            v: {"value": _none(row[v]), "ci_low": _none(row[f"{v} ci_low"]), "ci_high": _none(row[f"{v} ci_high"])}
            for v in table.variants
        }
        item["per_prompt"] = (
            {p: _none(x) for p, x in table.per_prompt.loc[label].items()} if label in table.per_prompt.index else {}
        )
        rows.append(item)
    doc = {
        "key": table.key,
        "title": table.title,
        "prompt_set": table.prompt_set,
        "classifier": table.classifier,
        "attribute": table.attribute,
        "metric": table.metric,
        "family": table.family,
        "higher_is_better": table.higher_is_better,
        "headline": table.headline,
        "rows": rows,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)


def _none(x: object) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _neutral(value: object) -> object:
    """A text cell a spreadsheet would run as a formula, prefixed with ' (OWASP's CSV-injection advice)."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def safe_csv(frame: pd.DataFrame) -> str:
    """CSV of ``frame`` with every text cell and label neutralised (names come from submissions)."""
    frame = frame.copy()
    frame.index = frame.index.map(_neutral)
    frame.columns = frame.columns.map(_neutral)
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].map(_neutral)
    return frame.to_csv(float_format="%.6g")


def to_csv(table: Table) -> str:
    return safe_csv(table.frame)


def _md_cell(text: object) -> str:
    # A pipe or newline inside a cell would break the row; HTML-significant characters are escaped
    # because many Markdown renderers pass inline HTML through.
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_markdown(table: Table) -> str:
    disp = table.display_frame()
    header = ["method", *disp.columns]
    lines = [
        f"**{_md_cell(table.title)}**",
        "",
        "| " + " | ".join(_md_cell(h) for h in header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(disp.columns)) + "|",
    ]
    for label, row in disp.iterrows():
        lines.append("| " + " | ".join(_md_cell(x) for x in [label, *row.tolist()]) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: object) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text).replace("\n", " "))


def to_latex(table: Table) -> str:
    """A booktabs ``tabular``; the best method's headline cell is bold."""
    disp = table.display_frame()
    cols = ["method", *disp.columns]
    lines = [
        f"% {latex_escape(table.title)}",
        r"\begin{tabular}{l" + "r" * len(disp.columns) + "}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in cols) + r" \\",
        r"\midrule",
    ]
    for label, row in disp.iterrows():
        cells = [latex_escape(label)] + [latex_escape(x) for x in row.tolist()]
        if row["rank"] == "1":
            i = cols.index(table.headline)
            cells[i] = r"\textbf{" + cells[i] + "}"
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


EXPORTERS = {"csv": to_csv, "json": to_json, "md": to_markdown, "tex": to_latex}


def write_tables(tables: list[Table], out_dir: str | Path) -> list[Path]:
    """Write every table in every format plus its per-prompt CSV, and ``tables.md`` with all of them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for table in tables:
        for ext, fn in EXPORTERS.items():
            path = out / f"{table.key}.{ext}"
            path.write_text(fn(table), encoding="utf-8")
            written.append(path)
        if not table.per_prompt.empty:
            path = out / f"{table.key}.per-prompt.csv"
            path.write_text(safe_csv(table.per_prompt), encoding="utf-8")
            written.append(path)
    index = out / "tables.md"
    index.write_text("\n".join(to_markdown(t) for t in tables), encoding="utf-8")
    written.append(index)
    return written
