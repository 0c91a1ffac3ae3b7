"""Shipped studies on the leaderboard page: ``leaderboard/studies/<name>.json`` is the ``study.json``
that ``debias-bench study`` wrote (results only, no weights). Each becomes a section: the settings per
sampler point with FD, the paired change, FID and the FD–FID front, the spread over training seeds,
robustness over the sampler grid and the hypervolume per method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.errors import DataError

MAX_STUDY_BYTES = 8 << 20
DEFAULT_STUDIES = Path(__file__).resolve().parent / "studies"


def load_studies(folder: str | Path) -> list[dict[str, Any]]:
    """Every ``*.json`` study in ``folder`` (none when it does not exist), sorted by name."""
    out = []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        if path.stat().st_size > MAX_STUDY_BYTES:
            raise DataError(f"{path}: a study file larger than {MAX_STUDY_BYTES} bytes")
        try:
            study = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(study, dict) or not isinstance(study.get("rows"), list):
            raise DataError(f"{path}: not a study (no 'rows' list)")
        study["file"] = path.name
        out.append(study)
    return out


def _f(x: Any, fmt: str = ".3f", signed: bool = False) -> str:
    if not isinstance(x, (int, float)) or x != x:
        return "–"
    return format(x, ("+" if signed else "") + fmt)


def _where(sampler: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in sampler.items()) or "the profile's sampler"


def study_figures(rows: list[dict[str, Any]], render: Any) -> list[dict[str, str]]:
    """Per sampler point, FD against FID with each setting labelled where it is drawn, the FD interval
    as a bar and the FD–FID front as a line; with several sampler points, each setting's FD across
    them. ``render`` turns a matplotlib figure into an image URI."""
    import matplotlib.pyplot as plt

    figures = []
    keys = list(dict.fromkeys(json.dumps(r.get("sampler", {}), sort_keys=True) for r in rows))
    for key in keys:
        here = [r for r in rows if json.dumps(r.get("sampler", {}), sort_keys=True) == key
                and isinstance(r.get("fd"), (int, float)) and isinstance(r.get("fid"), (int, float))]
        if len(here) < 2:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for r in here:
            low, high = r.get("fd_low"), r.get("fd_high")
            err = [[r["fd"] - low], [high - r["fd"]]] if isinstance(low, (int, float)) and isinstance(high, (int, float)) else None
            colour = "black" if r.get("label") == "baseline" else ("tab:red" if r.get("front_fid") else "tab:blue")
            ax.errorbar(r["fd"], r["fid"], xerr=err, fmt="o", color=colour, ecolor="0.75", capsize=2)
            ax.annotate(str(r.get("label", ""))[:32], (r["fd"], r["fid"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        front = sorted((r for r in here if r.get("front_fid")), key=lambda r: r["fd"])
        if len(front) > 1:
            ax.plot([r["fd"] for r in front], [r["fid"] for r in front], color="tab:red", lw=1, ls="--",
                    label="FD–FID front")
            ax.legend(fontsize=8)
        ax.set_xlabel("FD (lower is fairer) ←", fontsize=10)
        ax.set_ylabel("FID vs reference (lower is closer) ←", fontsize=10)
        ax.set_title(f"{_where(json.loads(key))}: fairness against quality", fontsize=10)
        figures.append({"title": f"{_where(json.loads(key))}: FD against FID", "uri": render(fig)})
    knobs = [json.loads(k) for k in keys]
    varying = [k for k in (knobs[0] if knobs else {}) if len({json.dumps(s.get(k)) for s in knobs}) > 1]
    if len(keys) > 1 and len(varying) == 1:
        knob = varying[0]
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        for label in dict.fromkeys(r.get("label") for r in rows):
            mine = sorted((r for r in rows if r.get("label") == label and isinstance(r.get("fd"), (int, float))),
                          key=lambda r: r["sampler"].get(knob, 0))
            ax.plot([r["sampler"][knob] for r in mine], [r["fd"] for r in mine], marker="o",
                    color="black" if label == "baseline" else None, label=str(label)[:32])
        ax.set_xlabel(knob.replace("_", " "), fontsize=10)
        ax.set_ylabel("FD (lower is fairer)", fontsize=10)
        ax.legend(fontsize=8, ncol=2)
        ax.set_title(f"FD across {knob.replace('_', ' ')}", fontsize=10)
        figures.append({"title": f"FD across {knob.replace('_', ' ')}", "uri": render(fig)})
    return figures


def _hypervolume(entry: dict[str, Any]) -> str:
    """The hypervolume, with its bootstrap interval where the study has one (files before it have none)."""
    if entry.get("hypervolume_low") is None:
        return _f(entry.get("hypervolume"))
    return f"{_f(entry.get('hypervolume'))} [{_f(entry['hypervolume_low'], '.2f')}, {_f(entry.get('hypervolume_high'), '.2f')}]"


def study_view(study: dict[str, Any], render: Any = None) -> dict[str, Any]:
    """Tables (header + rows of strings) of one study, and its figures when ``render`` is given
    (a matplotlib figure → image URI), for the page template."""
    rows = [r for r in study["rows"] if isinstance(r, dict)]
    points = []
    for key in dict.fromkeys(json.dumps(r.get("sampler", {}), sort_keys=True) for r in rows):
        here = sorted((r for r in rows if json.dumps(r.get("sampler", {}), sort_keys=True) == key),
                      key=lambda r: r.get("fd", float("inf")))
        table = [[str(r.get("label", "")) + (" *" if r.get("front_fid") else ""),
                  f"{_f(r.get('fd'))} [{_f(r.get('fd_low'))}, {_f(r.get('fd_high'))}]",
                  "–" if r.get("delta_fd") is None else
                  f"{_f(r.get('delta_fd'), signed=True)} [{_f(r.get('delta_low'), signed=True)}, {_f(r.get('delta_high'), signed=True)}]",
                  _f(r.get("fid")), _f(r.get("clip_t"), ".2f")] for r in here]
        first = here[0] if here else {}
        points.append({"title": f"{_where(json.loads(key))}: FD ({first.get('classifier')}, {first.get('attribute')})",
                       "columns": ["setting (* on the FD–FID front)", "FD [95% CI]", "ΔFD vs baseline [95% CI]", "FID",
                                   "CLIP-T"], "rows": table})
    seeds = [[s["method"] + "".join(f" {k} {v}" for k, v in s.get("knobs", {}).items()), ", ".join(map(str, s["seeds"])),
              *(f"{_f(s[f]['mean'], signed=f == 'delta_fd')} ± {_f(s[f]['sd'])} [{_f(s[f]['min'])}, {_f(s[f]['max'])}]"
                if f in s else "–" for f in ("fd", "delta_fd", "fid")),
              (lambda c: f"{_f(c.get('mean'))} [{_f(c.get('low'))}, {_f(c.get('high'))}]")(s["fd_seeds_and_images"])
              if isinstance(s.get("fd_seeds_and_images"), dict) else "–"]
             for s in study.get("seeds") or [] if isinstance(s, dict)]
    robust = [[w["label"], _f(w["worst_fd"]), _where(w.get("at", {})), _f(w["best_fd"])]
              for w in study.get("robustness") or [] if isinstance(w, dict) and w.get("points", 0) > 1]
    hv = [[h["method"], _hypervolume(h), str(h.get("settings")), _where(h.get("sampler", {}))]
          for h in study.get("hypervolume") or [] if isinstance(h, dict)]
    name = (study.get("study") or {}).get("name") or study["file"].removesuffix(".json")
    return {
        "name": name, "description": " ".join(str(study.get("description") or "").split()),
        "made": f"debias-bench {study.get('debias_bench', '?')}, {study.get('created') or 'date not recorded'}; "
                f"runs {', '.join(map(str, study.get('runs') or []))}",
        "points": points,
        "seeds": {"columns": ["method", "training seeds", "FD mean ± sd [range]", "ΔFD mean ± sd [range]",
                              "FID mean ± sd [range]", "FD over seeds and images [95% CI]"], "rows": seeds},
        "robustness": {"columns": ["setting", "worst FD", "at", "best FD"], "rows": robust},
        "hypervolume": {"columns": ["method", "hypervolume [95% bootstrap over images, where computed]", "settings",
                                    "sampler"], "rows": hv},
        "figures": study_figures(rows, render) if render is not None else [],
    }
