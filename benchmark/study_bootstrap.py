"""A bootstrap interval for the study hypervolume (``hypervolume_low``, ``hypervolume_high``, ``bootstrap``).

A study's hypervolume (:func:`benchmark.study.summaries`) is computed from each setting's set-level
soft FD and FID against the reference, both divided by the baseline's. All of them are estimated from
the same finite images: each replicate here draws, within each prompt, image indices with replacement,
the same indices for every setting and for the baseline (a study samples every setting on the same
image seeds, so their images are paired), recomputes every FD and FID on those images exactly as the
run's records define them, normalises by the baseline's values on the same draw and takes the
hypervolume; the interval is the basic one, 2 × estimate − the replicates' 97.5 and 2.5 percentiles. Row 0 of the draws is the
identity, and it must give the rows' FD and FID back (relative 1e-6) before an interval is given.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.config import BASELINE
from benchmark.errors import BenchError
from benchmark.metrics.fid import FeatureStats
from benchmark.study_fronts import FID_LIMIT, MeasureColumns, hypervolume, hypervolume_members, measure_columns

log = logging.getLogger(__name__)

HV_BOOT = 200
CHECK_RTOL = 1e-6  # the identity draw must reproduce the rows' FD and FID to this (else: no interval)
Reference = FeatureStats | Callable[[dict[str, Any]], "FeatureStats | None"] | None


@dataclass
class RunImages:
    """One run's per-image data for a study's measure: the measure's class probabilities, whether the
    classifier saw a subject, the FID features, and per setting label and prompt the row positions of
    its images and their seeds, in the predictions file's order (the order the runner scored them in:
    FID's covariance sums in that order, and its matrix root is sensitive to the last bits)."""

    results: dict[str, Any]
    measure: MeasureColumns
    probs: np.ndarray  # (rows, K)
    subject: np.ndarray  # (rows,) bool
    features: np.ndarray  # (rows, D), as features.safetensors stores them
    positions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seeds: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def paired(self, label: str) -> bool:
        """The label has images on exactly the baseline's prompts, with the baseline's seeds."""
        mine, base = self.seeds.get(label), self.seeds.get(BASELINE)
        return mine is not None and base is not None and mine.keys() == base.keys() and all(
            np.array_equal(mine[p], base[p]) for p in base)


def load_run(run_dir: Path, attribute: str, classifier: str) -> RunImages | None:
    """A run folder's images for the measure; None without predictions, FID features or the measure's columns."""
    import pandas as pd

    from benchmark.quality import FEATURES_FILE, load_vectors

    if not all((run_dir / name).is_file() for name in ("predictions.parquet", "results.json", FEATURES_FILE)):
        return None
    pred = pd.read_parquet(run_dir / "predictions.parquet")
    features = load_vectors(run_dir / FEATURES_FILE, len(pred)).features
    results = json.loads((run_dir / "results.json").read_text())
    measure = measure_columns(results, attribute, classifier)
    if features is None or not set(measure.columns) <= set(pred.columns):
        return None
    subject = pred[measure.subject].to_numpy(bool) if measure.subject in pred.columns else np.ones(len(pred), bool)
    run = RunImages(results, measure, pred[measure.columns].to_numpy(np.float64), subject, features)
    pred = pred.assign(_row=np.arange(len(pred)))
    if "prompt_set" in pred.columns:
        pred = pred[pred["prompt_set"] == measure.prompt_set]
    for (label, pid), g in pred.groupby(["method", "prompt_id"], sort=False):
        run.positions.setdefault(label, {})[pid] = g["_row"].to_numpy()
        run.seeds.setdefault(label, {})[pid] = g["seed"].to_numpy()
    return run


def draws(sizes: dict[str, int], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Per prompt, (1 + n_boot, n) image indices: row 0 the identity, then draws with replacement
    (seeded by prompt id, so a prompt's draws do not depend on the others; ``n_boot`` 0: the identity)."""
    from benchmark.metrics.bootstrap import resample_indices, rng_for

    return {pid: np.vstack([np.arange(n)[None], *([resample_indices(n, n_boot, rng_for(seed, f"hypervolume/{pid}"))]
                                                  if n_boot else [])])
            for pid, n in sizes.items()}


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)


def soft_fd(run: RunImages, label: str, idx: dict[str, np.ndarray]) -> np.ndarray:
    """Set-level soft FD of ``label`` on each draw: the mean over free prompts of ‖share − target‖₂, the
    share the mean probability over the drawn images with a subject (a prompt with none drops out)."""
    total = count = 0.0
    for pid, rows in run.positions[label].items():
        if pid not in run.measure.free:
            continue
        weights = _counts(idx[pid], len(rows)) * run.subject[rows]
        seen = weights.sum(axis=1)
        share = weights @ run.probs[rows] / np.where(seen > 0, seen, 1.0)[:, None]
        total = total + np.where(seen > 0, np.linalg.norm(share - run.measure.target, axis=1), 0.0)
        count = count + (seen > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / count, dtype=np.float64)


def fid_vs_reference(run: RunImages, label: str, idx: dict[str, np.ndarray], reference: FeatureStats) -> np.ndarray:
    """FID of ``label``'s images on each draw against ``reference``, over every prompt of the set, as the
    run's ``fid`` ``vs-reference`` record: the identity draw by the runner's own computation, the others
    by one symmetric eigenproblem each (they agree to about 1e-8 relative; the matrix root of a nearly
    singular product is not better conditioned than that)."""
    from benchmark.metrics.fid import _resampled_fid, frechet_distance

    order = list(run.positions[label])
    rows = np.concatenate([run.positions[label][p] for p in order])
    starts = np.cumsum([0, *(len(run.positions[label][p]) for p in order[:-1])])
    features = run.features[rows]
    exact = frechet_distance(FeatureStats.from_features(features, reference.fingerprint, keep_features=False), reference)
    drawn = np.concatenate([idx[p][1:] + s for p, s in zip(order, starts, strict=True)], axis=1)
    return np.concatenate([[exact], _resampled_fid(features, drawn, reference) if drawn.size else []])


def reference_for_run(config: dict[str, Any]) -> FeatureStats | None:
    """The FID reference statistics a run scored against, found as the runner finds them
    (:func:`benchmark.scoring.score`): the config's ``reference_stats`` file, else the profile's
    reference images through its feature extractor, their features read back from the run's cache."""
    from benchmark.cache import DiskMemo
    from benchmark.config import RunConfig
    from benchmark.metrics import load_reference_stats
    from benchmark.profiles import load_profile
    from benchmark.scoring import profile_reference_stats

    cfg = RunConfig.model_validate(config)
    if not cfg.metrics.fid:
        return None
    profile = load_profile(cfg)
    features = profile.features
    if features is None:
        return None
    fingerprint = getattr(features, "fingerprint", None)
    if isinstance(fingerprint, str) and fingerprint:
        features = DiskMemo(features, fingerprint, Path(cfg.cache_dir) / "features")
    if cfg.reference_stats:
        return load_reference_stats(cfg.reference_stats, features)
    if profile.reference is None:
        return None
    return profile_reference_stats(dataclasses.replace(profile, features=features), Path(cfg.cache_dir))


class _Replicates:
    """Each label's (FD, FID) on the identity and the resampled draws of one run, computed once."""

    def __init__(self, run: RunImages, reference: FeatureStats, n_boot: int, seed: int) -> None:
        sizes = {p: len(rows) for p, rows in run.positions.get(BASELINE, {}).items()}
        self.run, self.reference, self.idx = run, reference, draws(sizes, n_boot, seed)
        self.done: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}

    def of(self, label: str) -> tuple[np.ndarray, np.ndarray] | None:
        if label not in self.done:
            ok = self.run.paired(label)
            self.done[label] = (soft_fd(self.run, label, self.idx),
                                fid_vs_reference(self.run, label, self.idx, self.reference)) if ok else None
        return self.done[label]


def _reproduces(values: tuple[np.ndarray, np.ndarray], row: dict[str, Any]) -> bool:
    return all(row[k] is not None and np.isclose(v[0], row[k], rtol=CHECK_RTOL, atol=0.0)
               for k, v in zip(("fd", "fid"), values, strict=True))


def replicate_hypervolumes(base: tuple[np.ndarray, np.ndarray], settings: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The hypervolume on each draw, every setting normalised by the baseline's FD and FID on that draw
    (a draw where the baseline's FD or FID is 0 dominates nothing)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        pts = [(fd / base[0], fid / base[1]) for fd, fid in settings]
    return np.array([hypervolume([(float(x[b]), float(y[b])) for x, y in pts], (1.0, FID_LIMIT))
                     for b in range(len(base[0]))])


def hypervolume_intervals(entries: list[dict[str, Any]], rows: list[dict[str, Any]], run_dirs: dict[str, Path],
                          n_boot: int = HV_BOOT, seed: int = 0, level: float = 0.95,
                          reference: Reference = None) -> None:
    """Adds ``hypervolume_low``, ``hypervolume_high`` (a ``level`` basic bootstrap interval,
    :func:`basic_interval`) and ``bootstrap``
    (its number of draws) to each hypervolume entry of :func:`benchmark.study.summaries`.

    What it covers: the images' sampling error of the hypervolume, for the settings as trained. Every
    draw resamples each prompt's images (the same indices for every setting and for the baseline: their
    images share seeds), so the FD and FID of the baseline, which define the box, vary with those of
    the settings. Not covered: training seeds (one trained model per setting; see the seed spread), the
    choice of the grid, the classifier's errors and the reference set's own sampling error (its
    statistics are held fixed).

    Its limits: the hypervolume is a max-type statistic (the area under the best settings' staircase),
    clipped at 0 when no setting is inside the box and bounded by 1. A percentile bootstrap of such a
    statistic is biased where it sits near those edges (the basic interval reflects the draws about the
    estimate, which undoes most of the bias below; the percentile interval's coverage is quoted here): near 0 the resamples pile up at exactly 0 and
    the interval's ends say how often a setting escapes the box, not a symmetric margin of error; the
    max over settings picks each draw's luckiest one, so with many settings the draws sit above the
    truth; near perfect fairness a setting's FD, a norm, is biased upward, so the hypervolume is biased
    down and the draws, which add that bias again, lie below the truth (simulated coverage 0.17 for one
    truly fair setting, 0.92-0.97 for one setting away from the edges: docs/studies.md). FID is also
    biased upward on few images and a resample repeats images (the covariance
    shrinks), so a draw's FID is not distributed like a fresh sample's; dividing by the baseline's FID
    on the same draw cancels most of that, not all. Read the interval as how fragile the number is to
    the images, not as a calibrated 95 % confidence interval. Where no draw has a positive
    hypervolume the interval is [0, 0].

    Entries get no interval where the run's predictions or FID features are missing (the tiny profile
    has no FID features), the run has no FID reference, a setting's images are not paired with the
    baseline's, or the identity draw does not reproduce the rows' FD and FID (another measure variant
    than soft, say). ``reference``: the reference statistics, or a function of the run's config that
    gives them; default :func:`reference_for_run`."""
    if n_boot < 1:
        return
    runs: dict[str, _Replicates | None] = {}
    refs: dict[str, FeatureStats | None] = {}
    for entry in entries:
        here = [r for r in rows if r["sampler"] == entry["sampler"]]
        base = next((r for r in here if r["label"] == BASELINE), None)
        members = hypervolume_members(here, entry["method"])
        if base is None or not members:
            continue
        if base["run_id"] not in runs:
            runs[base["run_id"]] = _replicates_of(run_dirs.get(base["run_id"]), base, reference, refs, n_boot, seed)
        reps = runs[base["run_id"]]
        values = [reps.of(r["label"]) for r in (base, *members)] if reps is not None else [None]
        if any(v is None for v in values):
            continue
        if not all(_reproduces(v, r) for v, r in zip(values, (base, *members), strict=True)):
            log.warning("hypervolume interval of %s skipped: the run's images do not reproduce its FD and FID",
                        entry["method"])
            continue
        hv = replicate_hypervolumes(values[0], values[1:])
        low, high = basic_interval(float(hv[0]), hv[1:], level)
        entry.update(hypervolume_low=low, hypervolume_high=high, bootstrap=n_boot)


def basic_interval(estimate: float, draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The basic (reflected) bootstrap interval, 2 × estimate − the draws' upper and lower percentiles,
    within [0, 1]. It corrects for the draws' bias about the estimate, which for the hypervolume is
    large (the percentile interval covered 0.17 where a setting is fair, the basic one 0.87:
    docs/studies.md).

    >>> [round(x, 4) for x in basic_interval(0.5, np.array([0.3, 0.35, 0.4, 0.45]), level=0.5)]  # draws below
    [0.5875, 0.6625]
    """
    lo_q, hi_q = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(np.clip(2 * estimate - hi_q, 0.0, 1.0)), float(np.clip(2 * estimate - lo_q, 0.0, 1.0))


def _replicates_of(run_dir: Path | None, base: dict[str, Any], reference: Reference,
                   refs: dict[str, FeatureStats | None], n_boot: int, seed: int) -> _Replicates | None:
    """The run's replicates, or None where it lacks what they need (the reference found once per profile;
    a run or reference that cannot be read skips the interval, it does not fail the study)."""
    try:
        run = None if run_dir is None else load_run(run_dir, base["attribute"], base["classifier"])
        if run is None:
            return None
        config = run.results["config"]
        if isinstance(reference, FeatureStats):
            ref = reference
        else:
            skip = ("methods", "sampler", "prepared_with", "output_dir", "run_id")
            key = json.dumps({k: v for k, v in config.items() if k not in skip}, sort_keys=True, default=str)
            if key not in refs:
                refs[key] = (reference or reference_for_run)(config)
            ref = refs[key]
    except (BenchError, ValueError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
        log.warning("hypervolume interval skipped for run %s: %s", base["run_id"], exc)
        return None
    return None if ref is None else _Replicates(run, ref, n_boot, seed)
