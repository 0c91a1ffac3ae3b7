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


def study_view(study: dict[str, Any]) -> dict[str, Any]:
    """Tables (header + rows of strings) of one study, for the page template."""
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
    hv = [[h["method"], _f(h["hypervolume"]), str(h.get("settings")), _where(h.get("sampler", {}))]
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
        "hypervolume": {"columns": ["method", "hypervolume", "settings", "sampler"], "rows": hv},
    }
