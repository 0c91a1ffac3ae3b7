"""Studies: one command that compares methods over a grid of their knobs and of the sampler.

A study file (YAML, validated like a run config) names methods, a grid over each method's parameters,
optional presets (``defaults``: the method's own defaults, ``paper``: its ``Params.paper()``), a grid
over the shared sampler knobs (guidance scale, step count), an image budget and what to measure::

    description: DDM's α over three training seeds
    run: {prompt_sets: [world], max_prompts: 10, images_per_prompt: 64, classifiers: [world]}
    measure: {attribute: color, classifier: world}
    methods:
      - name: ddm
        grid: {alpha: [0.0, 0.05], seed: [0, 1, 2]}
    sampler: {guidance_scale: [1.5, 3.0]}

Every sampler point is one ordinary run (the baseline included, so every setting gets paired deltas),
through the same runner, cache and prepared artefacts as ``debias-bench run``: a knob that changes
only sampling never retrains. With a sampler grid, methods are prepared where the profile's sampler
(or the study's ``run.sampler``) puts them and then sample at each point (``RunConfig.prepared_with``),
so the robustness table shows what moving away from the tuned operating point does.

The study's table has, per setting and sampler point: FD with its interval, the paired change against
the baseline, FID, CLIP-T, UNet evaluations and seconds per image; the settings on the fairness–FID and
fairness–CLIP-T fronts; per method, the hypervolume it dominates in the box between perfect fairness
and the baseline's FD, up to 1.5× the baseline's FID, with a bootstrap interval over the images
(:mod:`benchmark.study_bootstrap`); and each setting's worst FD over the sampler grid.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.config import BASELINE, LABEL_PATTERN, RunConfig, read_config_file, validate_config
from benchmark.errors import ConfigError
from benchmark.hashing import hash_value
from benchmark.study_fronts import FID_LIMIT, dominated, hypervolume, hypervolume_members, measure_columns

MAX_POINTS = 500
SAMPLER_KNOBS = ("guidance_scale", "num_inference_steps")
SHRINK = 2.5  # standard errors a prompt's share is moved toward the target in seed_and_image_interval


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudyMethod(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)  # fixed for every grid point
    settings: list[Literal["defaults", "paper"]] = Field(default_factory=lambda: ["defaults"], min_length=1)
    grid: dict[str, list[Any]] = Field(default_factory=dict)


class Measure(_Strict):
    attribute: str | None = None  # default: the run's debias attribute (the first prompt set's first)
    classifier: str | None = None  # default: the run's first classifier
    variant: str = "soft"


class StudySpec(_Strict):
    name: str = Field(pattern=LABEL_PATTERN)
    description: str = ""
    run: dict[str, Any] = Field(default_factory=dict)
    measure: Measure = Field(default_factory=Measure)
    methods: list[StudyMethod] = Field(min_length=1)
    sampler: dict[Literal["guidance_scale", "num_inference_steps"], list[float]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Setting:
    """One method setting of the grid: its run label and what it varies."""

    label: str
    method: str
    preset: str
    knobs: dict[str, Any]
    params: dict[str, Any]


@dataclass(frozen=True)
class Point:
    """One sampler point: its overrides and the run config that measures every setting there."""

    sampler: dict[str, Any]
    config: RunConfig


def load_study(name_or_path: str | Path) -> StudySpec:
    """A shipped study by name (``debias-bench list studies``) or a YAML file; one-line errors."""
    from studies import STUDIES

    text_name = str(name_or_path)
    if text_name in STUDIES:
        from benchmark import yamlfile

        return parse_study(yamlfile.load(STUDIES[text_name].read_text(encoding="utf-8")), text_name, text_name)
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
        raise ConfigError(f"unknown study {text_name!r}; known: {', '.join(STUDIES) or 'none'} (or a path to a .yaml file)")
    return parse_study(read_config_file(path), path.stem, str(path))


def parse_study(data: Any, default_name: str, source: str) -> StudySpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping, got {type(data).__name__}")
    try:
        return StudySpec.model_validate({"name": default_name, **data})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {where}: {' '.join(str(msg).split())}") from None


def _label_part(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", format(value, "g") if isinstance(value, float) else str(value))


def settings(spec: StudySpec, source: str = "study") -> list[Setting]:
    """Every method setting: presets × the product of the method's grid, each with a unique label."""
    from methods import METHODS

    out: list[Setting] = []
    for i, m in enumerate(spec.methods):
        if m.name not in METHODS:
            raise ConfigError(f"{source}: methods.{i}.name: unknown method {m.name!r}; known: {', '.join(METHODS.names())}")
        method = METHODS.get(m.name)
        fields = {f.name for f in dataclasses.fields(method.Params)}
        for key, values in m.grid.items():
            if key not in fields:
                raise ConfigError(f"{source}: methods.{i}.grid.{key}: {m.name} has no parameter {key!r}; "
                                  f"known: {', '.join(sorted(fields))}")
            if not values:
                raise ConfigError(f"{source}: methods.{i}.grid.{key}: give at least one value")
        for preset in m.settings:
            base = {}
            if preset == "paper":
                if not hasattr(method.Params, "paper"):
                    raise ConfigError(f"{source}: methods.{i}.settings: {m.name} has no paper preset")
                base = dataclasses.asdict(method.Params.paper())
            for values in itertools.product(*m.grid.values()):
                knobs = dict(zip(m.grid, values, strict=True))
                label = "-".join([m.name, *(["paper"] if preset == "paper" else []),
                                  *(f"{k}{_label_part(v)}" for k, v in knobs.items())])
                if len(label) > 64:
                    label = f"{m.name}-{hash_value([preset, knobs])[:12]}"
                out.append(Setting(label, m.name, preset, knobs, {**base, **m.params, **knobs}))
    seen: set[str] = set()
    for s in out:
        if s.label in seen or s.label == BASELINE:
            raise ConfigError(f"{source}: methods: the setting {s.label!r} appears twice")
        seen.add(s.label)
    return out


def points(spec: StudySpec, overrides: dict[str, Any] | None = None, source: str = "study") -> list[Point]:
    """One validated run config per sampler point (all checked before any work starts)."""
    chosen = settings(spec, source)
    base_sampler = dict(spec.run.get("sampler") or {})
    grid = list(itertools.product(*spec.sampler.values())) if spec.sampler else [()]
    if len(grid) * (len(chosen) + 1) > MAX_POINTS:
        raise ConfigError(f"{source}: {len(grid)} sampler points × {len(chosen) + 1} settings is more than {MAX_POINTS} runs")
    out = []
    for values in grid:
        point = {k: (int(v) if k == "num_inference_steps" else float(v)) for k, v in zip(spec.sampler, values, strict=True)}
        data = {**spec.run, **{k: v for k, v in (overrides or {}).items() if v is not None}}
        data["methods"] = [{"name": BASELINE}] + [{"name": s.method, "label": s.label, "params": s.params} for s in chosen]
        data["baseline"] = BASELINE
        if point:
            data["sampler"] = {**base_sampler, **point}
            # prepared at the tuned point (a per-step method at the point's step count: the runner's choice)
            data["prepared_with"] = dict(base_sampler)
        out.append(Point(point, validate_config(data, source)))
    return out


def study_rows(spec: StudySpec, results: list[tuple[dict[str, Any], dict]]) -> list[dict[str, Any]]:
    """One row per (sampler point, setting) from each point's results.json."""
    by_label = {s.label: s for s in settings(spec)}
    rows = []
    for sampler, res in results:
        config = res["config"]
        attribute = spec.measure.attribute or config.get("debias_attribute") or next(
            iter(res["prompt_sets"].values()))["attributes"][0]
        classifier = spec.measure.classifier or config["classifiers"][0]

        def pick(metric: str, variant: str, fairness: bool, res=res, attribute=attribute, classifier=classifier):
            found = {}
            for r in res["metrics"]:
                if r["metric"] == metric and r["variant"] == variant and r["prompt_id"] is None and (
                        not fairness or (r["attribute"] == attribute and r["classifier"] == classifier)):
                    found.setdefault(r["method"], r)
            return found

        fd, delta = pick("fd", spec.measure.variant, True), pick("delta_fd", spec.measure.variant, True)
        fid, clip = pick("fid", "vs-reference", False), pick("clip_t", "mean", False)
        for key, r in fd.items():
            s = by_label.get(key)
            d = delta.get(key, {})
            cost = res.get("cost", {}).get(key, {})
            info = res.get("models", {}).get("methods", {}).get(key, {})
            rows.append({
                "label": key, "method": s.method if s else key, "preset": s.preset if s else "defaults",
                "knobs": s.knobs if s else {}, "sampler": sampler, "attribute": attribute, "classifier": classifier,
                "fd": r["value"], "fd_low": r["ci_low"], "fd_high": r["ci_high"],
                "delta_fd": d.get("value"), "delta_low": d.get("ci_low"), "delta_high": d.get("ci_high"),
                "p_value": d.get("p_value"), "fid": fid.get(key, {}).get("value"),
                "clip_t": clip.get(key, {}).get("value"), "unet_evals": cost.get("unet_evals_per_image"),
                "seconds_per_image": cost.get("seconds_per_image"), "run_id": res["run_id"],
                "artefact_key": info.get("artefact_key"), "artefacts": info.get("artefacts", {}),
            })
    mark_fronts(rows)
    return rows


def mark_fronts(rows: list[dict[str, Any]]) -> None:
    """``front_fid`` / ``front_clip``: on the Pareto front of (FD, FID) / (FD, −CLIP-T) at its sampler point.

    >>> rows = [{"sampler": {}, "fd": 0.3, "fid": 1.0, "clip_t": 50}, {"sampler": {}, "fd": 0.1, "fid": 2.0, "clip_t": 49},
    ...         {"sampler": {}, "fd": 0.2, "fid": 2.5, "clip_t": 48}]
    >>> mark_fronts(rows); [r["front_fid"] for r in rows]
    [True, True, False]
    """
    for name, other, sign in (("front_fid", "fid", 1.0), ("front_clip", "clip_t", -1.0)):
        for r in rows:
            if r.get(other) is None:
                r[name] = None
                continue
            mine = (r["fd"], sign * r[other])
            peers = [(q["fd"], sign * q[other]) for q in rows if q["sampler"] == r["sampler"] and q.get(other) is not None]
            r[name] = not any(dominated(mine, p) for p in peers)


def summaries(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and sampler point, the hypervolume its settings dominate in the (FD, FID) box between
    perfect fairness and the baseline's FD, up to FID_LIMIT × the baseline's FID (a point without FID
    counts as not dominating); per setting, its worst FD over the sampler grid."""
    hv = []
    for sampler in [json.loads(s) for s in dict.fromkeys(json.dumps(r["sampler"], sort_keys=True) for r in rows)]:
        here = [r for r in rows if r["sampler"] == sampler]
        base = next((r for r in here if r["label"] == BASELINE), None)
        if base is None or not base["fd"] or not base["fid"]:
            continue
        for method in dict.fromkeys(r["method"] for r in here if r["label"] != BASELINE):
            pts = [(r["fd"] / base["fd"], r["fid"] / base["fid"]) for r in hypervolume_members(here, method)]
            hv.append({"method": method, "sampler": sampler, "settings": len(pts),
                       "hypervolume": hypervolume(pts, (1.0, FID_LIMIT))})
    return {"hypervolume": hv, "robustness": robustness(rows), "seeds": seed_spread(rows)}


def seed_spread(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Settings that differ only in the training ``seed``: per method, other knobs and sampler point,
    how FD, its paired change and FID spread over the seeds (mean, sample sd, min, max)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if "seed" in r["knobs"]:
            rest = {k: v for k, v in r["knobs"].items() if k != "seed"}
            groups.setdefault(json.dumps([r["method"], r["preset"], rest, r["sampler"]], sort_keys=True,
                                         default=str), []).append(r)
    out = []
    for key, members in groups.items():
        method, preset, rest, sampler = json.loads(key)
        if len(members) < 2:
            continue
        entry = {"method": method, "preset": preset, "knobs": rest, "sampler": sampler,
                 "seeds": [m["knobs"]["seed"] for m in members]}
        for field in ("fd", "delta_fd", "fid"):
            values = np.array([m[field] for m in members if m[field] is not None], dtype=float)
            if len(values):
                entry[field] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                                "min": float(values.min()), "max": float(values.max())}
        out.append(entry)
    return out


def seed_and_image_interval(probs: dict[str, dict[str, np.ndarray]], target: np.ndarray, n_boot: int = 1000,
                            seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Set-level soft FD averaged over training seeds, with an interval for the expected set-level FD of
    one training run, E_s[(1/P) Σ_p ‖π_sp − target‖₂] (π_sp: seed s's expected soft class share on prompt
    p; the expectation is over the population of training seeds, with unlimited images). That is the
    mean over seeds of each seed's FD, not the FD of the seeds' mean share, which is smaller when seeds
    move the share in different directions.

    ``probs``: setting label (one per training seed) → prompt id → (N, K) probabilities of the images;
    the set-level FD of a setting is the mean over its prompts of ‖mean probability − target‖₂, and
    ``mean`` is the mean of those over seeds (the estimate, unchanged).

    The estimate's error is the seeds' (the S seeds trained are a sample) plus the images'. The images'
    error of a seed's prompt, ‖p̂ − t‖ − ‖π − t‖, lies between ⟨u, p̂ − π⟩ (u the unit vector from t to π,
    Cauchy–Schwarz), a zero-mean term, and ‖p̂ − π‖ (triangle inequality): it is positive on average
    (a norm's bias), most at π = t, where it is the whole ‖p̂ − π‖. So:

    * ``low``: the images' error is simulated by resampling each prompt's images around a share moved
      from p̂ toward the target by SHRINK standard errors (along p̂ − t; at the target when closer), the
      least favourable truth the prompt's images leave plausible: the full bias where a prompt may be
      fair, next to none where it is clearly not. The same image indices are drawn for every seed,
      since a study samples every setting on the same image seeds (paired images are correlated;
      valid for unpaired ones too). ``low`` = estimate − mean error − t·√(seed variance + error
      variance), floored at 0.
    * ``high``: estimate + t·√(seed variance + V), V the variance bound of the zero-mean term (each
      prompt's largest share variance along any direction, summed over seeds as if fully correlated).
    * seed variance: the sample variance of the seeds' FDs over S (it also holds image noise, so it errs
      wide); t is Student's with the Welch–Satterthwaite degrees of freedom (S − 1 for the seed part,
      unlimited for the images'), which is what makes three seeds honest: t(2) = 4.30.

    Simulated coverage at 0.95 is 0.957–1.000 for 3, 5 and 10 seeds, fair to biased truths, with and
    without a seed effect (docs/studies.md; ``tests/test_seed_interval_coverage.py``).

    >>> rng = np.random.default_rng(0)
    >>> same = {f"s{i}": {"p": rng.dirichlet([5, 5], 200)} for i in range(3)}
    >>> out = seed_and_image_interval(same, np.array([0.5, 0.5]), n_boot=300)
    >>> bool(out["low"] <= out["mean"] <= out["high"]), out["low"]  # near fair: the interval reaches 0
    (True, 0.0)
    """
    from scipy import stats

    rng = np.random.default_rng([seed, 0x5EED])
    target = np.asarray(target, dtype=np.float64)
    labels = sorted(probs)
    n_seeds = len(labels)
    per_seed = np.array([np.mean([np.linalg.norm(p.mean(axis=0) - target) for p in probs[label].values()])
                         for label in labels])
    value = float(per_seed.mean())
    error = np.zeros(n_boot)  # draws of the images' error of the estimate at the least favourable shares
    sd_linear = []  # per prompt, the bound on the zero-mean term's sd
    for pid in sorted(set().union(*(probs[label] for label in labels))):
        have = [label for label in labels if pid in probs[label]]
        sizes = {len(probs[label][pid]) for label in have}
        n = sizes.pop() if len(sizes) == 1 else None  # paired: one draw of image indices for every seed
        shared = rng.integers(0, n, size=(n_boot, n)) if n is not None else None
        sd = 0.0
        for label in have:
            p = np.asarray(probs[label][pid], dtype=np.float64)
            weight = 1.0 / (len(probs[label]) * n_seeds)
            idx = shared if shared is not None else rng.integers(0, len(p), size=(n_boot, len(p)))
            mean = p.mean(axis=0)
            draws = p[idx].mean(axis=1) - mean
            cov = np.atleast_2d(np.cov(p.T, ddof=0)) / len(p)
            away = mean - target
            dist = float(np.linalg.norm(away))
            along = float(np.sqrt(max(away @ cov @ away, 0.0))) / dist if dist > 0 else 0.0
            moved = target + away * max(0.0, 1.0 - SHRINK * along / dist) if dist > 0 else target
            error += weight * (np.linalg.norm(moved + draws - target, axis=1) - np.linalg.norm(moved - target))
            sd += weight * float(np.sqrt(max(np.linalg.eigvalsh(cov)[-1], 0.0)))
        sd_linear.append(sd)
    var_seeds = float(per_seed.var(ddof=1)) / n_seeds if n_seeds > 1 else 0.0
    q = (1 + level) / 2

    def quantile(var_images: float) -> float:  # Welch–Satterthwaite
        if var_seeds == 0.0:
            return float(stats.norm.ppf(q))
        return float(stats.t.ppf(q, (var_seeds + var_images) ** 2 / (var_seeds ** 2 / (n_seeds - 1))))

    var_error, var_linear = float(error.var()), float(np.sum(np.square(sd_linear)))
    low = value - float(error.mean()) - quantile(var_error) * np.sqrt(var_seeds + var_error)
    high = value + quantile(var_linear) * np.sqrt(var_seeds + var_linear)
    return {"mean": value, "low": float(max(low, 0.0)), "high": float(high), "seeds": n_seeds}


def seed_intervals(spread: list[dict[str, Any]], rows: list[dict[str, Any]],
                   run_dirs: dict[str, Path]) -> None:
    """Adds ``fd_seeds_and_images`` (:func:`seed_and_image_interval`) to each seed-spread entry, from the
    predictions of the run that measured it."""
    import pandas as pd

    frames: dict[str, Any] = {}
    for entry in spread:
        members = [r for r in rows if r["method"] == entry["method"] and r["preset"] == entry["preset"]
                   and r["sampler"] == entry["sampler"] and "seed" in r["knobs"]
                   and {k: v for k, v in r["knobs"].items() if k != "seed"} == entry["knobs"]]
        run_dir = run_dirs.get(members[0]["run_id"]) if members else None
        if run_dir is None or not (run_dir / "predictions.parquet").is_file():
            continue
        if members[0]["run_id"] not in frames:
            frames[members[0]["run_id"]] = (pd.read_parquet(run_dir / "predictions.parquet"),
                                            json.loads((run_dir / "results.json").read_text()))
        pred, results = frames[members[0]["run_id"]]
        measure = measure_columns(results, members[0]["attribute"], members[0]["classifier"])
        probs = {}
        for r in members:
            part = pred[(pred["method"] == r["label"]) & pred["prompt_id"].isin(measure.free)]
            if measure.subject in part.columns:
                part = part[part[measure.subject].astype(bool)]
            probs[r["label"]] = {pid: g[measure.columns].to_numpy(np.float64)
                                 for pid, g in part.groupby("prompt_id", sort=True)}
        entry["fd_seeds_and_images"] = seed_and_image_interval(probs, measure.target,
                                                               seed=int(results["config"]["metrics"]["seed"]))


def robustness(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each setting's worst and best FD over the sampler grid, and where the worst is."""
    worst = []
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        top = max(mine, key=lambda r: r["fd"])
        worst.append({"label": label, "points": len(mine), "worst_fd": top["fd"], "at": top["sampler"],
                      "best_fd": min(r["fd"] for r in mine)})
    return worst


def _num(x: Any, fmt: str) -> str:
    return "—" if x is None or x != x else format(x, fmt)


def _hv_interval(entry: dict[str, Any]) -> str:
    """`` [low, high]`` of a hypervolume entry (:mod:`benchmark.study_bootstrap`), "" without one."""
    if entry.get("hypervolume_low") is None:
        return ""
    return f" [{entry['hypervolume_low']:.2f}, {entry['hypervolume_high']:.2f}]"


def format_tables(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """Plain-text tables: per sampler point the settings by FD; then hypervolumes and robustness."""
    out = []
    for sampler in list(dict.fromkeys(json.dumps(r["sampler"], sort_keys=True) for r in rows)):
        here = sorted((r for r in rows if json.dumps(r["sampler"], sort_keys=True) == sampler), key=lambda r: r["fd"])
        head = ", ".join(f"{k} {v:g}" for k, v in json.loads(sampler).items()) or "the profile's sampler"
        first = here[0]
        out.append(f"{head}: FD ({first['classifier']}, {first['attribute']}), lower is fairer; * on the FD–FID front")
        width = max(len(r["label"]) for r in here)
        out.append(f"{'setting':<{width}}  {'FD [95% CI]':<22} {'ΔFD vs baseline [CI]':<26} {'FID':>7} {'CLIP-T':>7} "
                   f"{'evals':>5} {'s/img':>7}")
        for r in here:
            fd = f"{r['fd']:.3f} [{r['fd_low']:.3f}, {r['fd_high']:.3f}]"
            delta = "—" if r["delta_fd"] is None else f"{r['delta_fd']:+.3f} [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}]"
            star = "*" if r.get("front_fid") else " "
            out.append(f"{r['label']:<{width}}{star} {fd:<22} {delta:<26} {_num(r['fid'], '7.3f')} "
                       f"{_num(r['clip_t'], '7.2f')} {_num(r['unet_evals'], '5d')} {_num(r['seconds_per_image'], '7.4f')}")
        out.append("")
    if summary["hypervolume"]:
        boot = next((h["bootstrap"] for h in summary["hypervolume"] if "hypervolume_low" in h), None)
        out.append(f"hypervolume (share of the box FD ≤ baseline's, FID ≤ {FID_LIMIT:g}× baseline's that a method's "
                   "settings dominate; 0 = none is fairer within that FID"
                   + (f"; [95 % bootstrap over the images, {boot} draws]" if boot else "") + "):")
        for h in summary["hypervolume"]:
            where = ", ".join(f"{k} {v:g}" for k, v in h["sampler"].items()) or "profile sampler"
            out.append(f"  {h['method']:<14} {h['hypervolume']:.3f}{_hv_interval(h)}  ({h['settings']} settings, {where})")
        out.append("")
    if summary.get("seeds"):
        out.append("over training seeds (mean ± sd [min, max]):")
        for s in summary["seeds"]:
            knobs = ", ".join(f"{k} {v}" for k, v in s["knobs"].items())
            name = s["method"] + (f" ({knobs})" if knobs else "") + (" paper" if s["preset"] == "paper" else "")
            parts = []
            for field, label in (("fd", "FD"), ("delta_fd", "ΔFD"), ("fid", "FID")):
                if field in s:
                    v = s[field]
                    parts.append(f"{label} {v['mean']:.3f} ± {_num(v['sd'], '.3f')} [{v['min']:.3f}, {v['max']:.3f}]")
            out.append(f"  {name:<24} seeds {','.join(map(str, s['seeds']))}: " + "; ".join(parts))
            if "fd_seeds_and_images" in s:
                c = s["fd_seeds_and_images"]
                out.append(f"  {'':<24} FD over seeds and images {c['mean']:.3f} [{c['low']:.3f}, {c['high']:.3f}] "
                           "(95 %, over training seeds and images)")
        out.append("")
    if any(w["points"] > 1 for w in summary["robustness"]):
        out.append("robustness (FD over the sampler grid):")
        for w in summary["robustness"]:
            at = ", ".join(f"{k} {v:g}" for k, v in w["at"].items())
            out.append(f"  {w['label']:<24} worst {w['worst_fd']:.3f} (at {at}), best {w['best_fd']:.3f}")
    return "\n".join(out).rstrip() + "\n"


def run_study(spec: StudySpec, overrides: dict[str, Any] | None = None, output_dir: str | Path = "results",
              progress: bool = True, source: str = "study") -> Path:
    """Run every sampler point (one ordinary run each), then write ``study.json`` and ``study.txt``
    into ``output_dir/study-<name>-<hash>/``; returns that folder."""
    import os
    import time

    from benchmark.runner import machine_info, run

    planned = points(spec, overrides, source)
    start, load = time.perf_counter(), os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    folder = Path(output_dir) / f"study-{spec.name}-{hash_value([spec.model_dump(), overrides or {}])[:8]}"
    results = []
    for i, point in enumerate(planned):
        if progress:
            where = ", ".join(f"{k} {v:g}" for k, v in point.sampler.items()) or "the profile's sampler"
            print(f"study {spec.name}: point {i + 1}/{len(planned)} ({where}), "
                  f"{len(point.config.methods)} settings", flush=True)
        config = point.config.model_copy(update={"output_dir": str(folder / "runs")})
        run_dir = run(config, progress=progress)
        results.append((point.sampler, json.loads((run_dir / "results.json").read_text())))
    rows = study_rows(spec, results)
    summary = summaries(rows)
    if spec.measure.variant == "soft":  # the seed-and-image and hypervolume intervals are written for soft FD
        from benchmark.study_bootstrap import hypervolume_intervals

        run_dirs = {r["run_id"]: folder / "runs" / r["run_id"] for _, r in results}
        seed_intervals(summary["seeds"], rows, run_dirs)
        hypervolume_intervals(summary["hypervolume"], rows, run_dirs, seed=planned[0].config.metrics.seed)
    from benchmark import __version__
    from benchmark.cache import atomic_write

    atomic_write(folder / "study.json", json.dumps({
        "study": spec.model_dump(), "overrides": overrides or {}, "rows": rows, **summary,
        "runs": [r["run_id"] for _, r in results], "debias_bench": __version__,
        # wall time of this invocation: cached settings and artefacts are read back, not re-made
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {**machine_info(), "load_before": load,
                    "load_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "created": results[0][1].get("created") if results else None,
        "description": spec.description}, indent=1, default=str).encode())
    atomic_write(folder / "study.txt", format_tables(rows, summary).encode())
    return folder


def dry_run(spec: StudySpec, overrides: dict[str, Any] | None = None, source: str = "study") -> str:
    """What the study would run: sampler points, settings, images (nothing is loaded or generated)."""
    from prompts import load_prompt_set

    planned = points(spec, overrides, source)
    config = planned[0].config
    prompts = sum(min(len(load_prompt_set(n).prompts), config.max_prompts or 10**9) for n in config.prompt_sets)
    per_prompt = config.images_per_prompt or load_prompt_set(config.prompt_sets[0]).images_per_prompt
    lines = [f"study {spec.name}: {len(planned)} sampler point(s) × {len(config.methods)} settings "
             f"(baseline included), {prompts} prompts × {per_prompt} images each: "
             f"{len(planned) * len(config.methods) * prompts * per_prompt} images at most (cached ones are reused)"]
    for s in config.methods:
        lines.append(f"  {s.key}: {s.name} {json.dumps({k: v for k, v in s.params.items()}, default=str)[:100]}")
    for p in planned:
        lines.append("  sampler " + (", ".join(f"{k} {v:g}" for k, v in p.sampler.items()) or "as the profile's"))
    return "\n".join(lines)
