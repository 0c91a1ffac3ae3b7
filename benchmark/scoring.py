"""Turns generated images and their predictions into metric records (docs/results-format.md).

Fairness numbers come from :func:`benchmark.metrics.fairness_records` (the same function the
submission check uses to recompute them); image quality and alignment from the FID and CLIP
metrics, where the profile supplies a feature extractor and an embedder.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark import progress
from benchmark.cache import CachedImageEncoder, DiskMemo
from benchmark.cell import Cell
from benchmark.config import RunConfig
from benchmark.errors import DataError
from benchmark.metrics import (
    MemoizedExtractor,
    clip_i,
    clip_t,
    fairness_records,
    fid_vs_baseline,
    fid_vs_reference,
    intersectional_records,
    load_reference_stats,
    make_record,
    mean_records,
    paired_delta_records,
    reference_stats,
)
from benchmark.metrics.cleam import matrices_by_prompt
from benchmark.metrics.fid import extract_features, paired_fid_delta
from classifiers import Classifier
from prompts import PromptSet

if TYPE_CHECKING:
    from benchmark.profiles import Profile

log = logging.getLogger(__name__)


def _label(records: list[dict], **keys: Any) -> list[dict]:
    return [{**keys, **r} for r in records]


def _columns(clf: Classifier, ps: PromptSet, attr: str) -> list[int]:
    """Column order that maps the classifier's classes onto the prompt set's classes."""
    theirs, ours = clf.attributes[attr], ps.classes[attr]
    if sorted(theirs) != sorted(ours):
        raise DataError(f"classifier {clf.name!r} attribute {attr!r} has classes {theirs}, prompt set "
                        f"{ps.name!r} expects {ours}")
    return [theirs.index(c) for c in ours]


def in_columns(matrices: np.ndarray | dict[str, np.ndarray] | None, cols: list[int]):
    """Confusion matrices (one, or one per prompt) reordered to the prompt set's class columns."""
    if matrices is None:
        return None
    if isinstance(matrices, dict):
        return {pid: np.asarray(m)[np.ix_(cols, cols)] for pid, m in matrices.items()}
    return np.asarray(matrices)[np.ix_(cols, cols)]


def fairness_for(cells: Sequence[Cell], ps: PromptSet, name: str, clf: Classifier, config: RunConfig) -> list[dict]:
    """Every fairness record of one method on one prompt set with one classifier."""
    named_of = {p.id: p.named for p in ps.prompts}
    text_of = {p.id: p.text for p in ps.prompts}
    attrs = [a for a in ps.attributes if a in clf.attributes]
    probs: dict[str, dict[str, np.ndarray]] = {a: {} for a in attrs}
    confusion: dict[str, np.ndarray | None] = {}
    soft_confusion: dict[str, np.ndarray | None] = {}
    for attr in attrs:
        cols = _columns(clf, ps, attr)
        for cell in cells:
            keep = cell.has_subject[name]
            if keep.any():  # prompts whose images all lack a subject are reported by no_subject_rate
                probs[attr][cell.prompt_id] = cell.predictions[name][attr][keep][:, cols]
        texts = {pid: text_of[pid] for pid in probs[attr]}
        # (getattr: a plugin classifier that never called Classifier.__init__ has no per-content matrices)
        for kept, pooled, by_content in ((confusion, clf.confusion, getattr(clf, "confusion_by_content", {})),
                                         (soft_confusion, clf.soft_confusion, getattr(clf, "soft_confusion_by_content", {}))):
            kept[attr] = in_columns(matrices_by_prompt(texts, pooled.get(attr), by_content.get(attr)), cols)
    boot = {"n_boot": config.metrics.bootstrap, "seed": config.metrics.seed}
    records: list[dict] = []
    for attr in attrs:
        if not probs[attr]:
            continue
        named = {pid: named_of[pid].get(attr) for pid in probs[attr]}
        recs = fairness_records(probs[attr], ps.classes[attr], ps.target.get(attr), confusion[attr], named,
                                soft_confusion=soft_confusion[attr], **boot)
        records += _label(recs, classifier=name, attribute=attr)
    for a, b in combinations(attrs, 2):
        if not probs[a]:
            continue
        recs = intersectional_records(
            probs[a], probs[b], ps.classes[a], ps.classes[b], ps.target.get(a), ps.target.get(b),
            confusion[a], confusion[b], {p: named_of[p].get(a) for p in probs[a]},
            {p: named_of[p].get(b) for p in probs[b]}, soft_confusion_a=soft_confusion[a],
            soft_confusion_b=soft_confusion[b], **boot)
        records += _label(recs, classifier=name, attribute=f"{a}×{b}")
    no_subject = {c.prompt_id: (~c.has_subject[name]).astype(float) for c in cells}
    records += _label(mean_records(no_subject, "no_subject_rate", "detector", False, **boot),
                      classifier=name, attribute=None)
    return records


def deltas_for(cells: Sequence[Cell], baseline: Sequence[Cell], ps: PromptSet, name: str, clf: Classifier,
               config: RunConfig) -> list[dict]:
    """Paired FD differences against the baseline (``delta_fd``), on the images where both show a subject."""
    base_of = {c.prompt_id: c for c in baseline}
    boot = {"n_boot": config.metrics.bootstrap, "seed": config.metrics.seed}
    records: list[dict] = []
    for attr in (a for a in ps.attributes if a in clf.attributes):
        cols = _columns(clf, ps, attr)
        mine, theirs = {}, {}
        for cell in cells:
            other = base_of.get(cell.prompt_id)
            if other is None or other.seeds != cell.seeds:
                continue
            keep = cell.has_subject[name] & other.has_subject[name]
            if keep.any():
                mine[cell.prompt_id] = cell.predictions[name][attr][keep][:, cols]
                theirs[cell.prompt_id] = other.predictions[name][attr][keep][:, cols]
        named = {p.id: p.named.get(attr) for p in ps.prompts if p.id in mine}
        if mine:
            recs = paired_delta_records(mine, theirs, ps.classes[attr], ps.target.get(attr), named, **boot)
            records += _label(recs, classifier=name, attribute=attr)
    return records


FID_BOOT = 200  # resamples for the ΔFID interval: two matrix roots each (the fairness intervals use the config's)


def _delta_fid(cells: Sequence[Cell], baseline: Sequence[Cell], features: Any, reference: Any,
               config: RunConfig) -> list[dict]:
    """FID(method) − FID(baseline) against the reference, paired by prompt and seed (``delta_fid``)."""
    base_of = {c.prompt_id: c for c in baseline}
    pairs = [(c, base_of.get(c.prompt_id)) for c in cells]
    if not all(b is not None and b.seeds == c.seeds and len(b.images) == len(c.images) for c, b in pairs):
        return []
    mine = extract_features(np.concatenate([c.images for c, _ in pairs]), features)
    theirs = extract_features(np.concatenate([b.images for _, b in pairs]), features)
    value, ci, p = paired_fid_delta(mine, theirs, reference, [len(c.images) for c in cells],
                                    min(config.metrics.bootstrap, FID_BOOT), config.metrics.seed)
    record = make_record(None, "delta_fid", "vs-reference", value, len(mine), ci)
    return [{"classifier": None, "attribute": None, **record, "p_value": p}]


def quality_for(cells: Sequence[Cell], baseline: Sequence[Cell] | None, profile: Profile, config: RunConfig,
                reference: Any, clip_scores: dict[tuple[str, str, str], np.ndarray] | None = None,
                features: Any = None) -> list[dict]:
    """FID (vs reference, vs baseline) and CLIP-T / CLIP-I records of one method on one prompt set.
    ``clip_scores`` keeps per-image CLIP-T scores by (method, prompt set, prompt) across calls, so the
    baseline's are computed once for every method's paired ``delta_clip_t``."""
    records: list[dict] = []
    images = np.concatenate([c.images for c in cells])
    n = len(images)
    none = {"classifier": None, "attribute": None}
    features = features if features is not None else profile.features
    if config.metrics.fid and profile.features is not None:
        if reference is not None:
            for metric, value in fid_vs_reference(images, features, reference, kid=True).items():
                records.append({**none, **make_record(None, metric, "vs-reference", value, n, None)})
        if baseline is not None:
            base_images = np.concatenate([c.images for c in baseline])
            for metric, value in fid_vs_baseline(images, base_images, features, kid=True).items():
                records.append({**none, **make_record(None, metric, "vs-baseline", value, n, None)})
            if reference is not None:
                records += _delta_fid(cells, baseline, features, reference, config)
    if config.metrics.clip and profile.embedder is not None:
        boot = {"n_boot": config.metrics.bootstrap, "seed": config.metrics.seed}
        known = clip_scores if clip_scores is not None else {}

        def scores_of(cell: Cell) -> np.ndarray:
            key = (cell.method, cell.prompt_set, cell.prompt_id)
            if key not in known:
                known[key] = clip_t(profile.embedder, cell.images, cell.prompt)
            return known[key]

        scores = {c.prompt_id: scores_of(c) for c in cells}
        records += _label(mean_records(scores, "clip_t", "mean", True, **boot), **none)
        if baseline is not None:
            base_of = {c.prompt_id: c for c in baseline}
            paired = {c.prompt_id: scores[c.prompt_id] - scores_of(base_of[c.prompt_id])
                      for c in cells if c.prompt_id in base_of and base_of[c.prompt_id].seeds == c.seeds}
            if paired:
                records += _label(mean_records(paired, "delta_clip_t", "mean", True, p_value=True, **boot), **none)
            pairs = {c.prompt_id: clip_i(profile.embedder, c.images, base_of[c.prompt_id].images)
                     for c in cells if c.prompt_id in base_of}
            if pairs:
                records += _label(mean_records(pairs, "clip_i", "vs-baseline", True, **boot), **none)
    return records


def truth_for(cells: Sequence[Cell], ps: PromptSet, name: str, clf: Classifier, truth: dict[str, dict],
              config: RunConfig) -> list[dict]:
    """Measured vs known true attribute shares, per prompt and class (profiles with a known bias).

    ``measured`` is the mean predicted probability of the class (the soft share behind soft FD),
    with a seeded percentile-bootstrap 95 % interval over the prompt's images.
    """
    from benchmark.metrics.bootstrap import bootstrap_ci

    rows = []
    for cell in cells:
        known = truth.get(cell.prompt_id)
        if known is None:
            continue
        keep = cell.has_subject[name]
        for attr in ps.attributes:
            if attr not in clf.attributes or attr not in known or not keep.any():
                continue
            probs = cell.predictions[name][attr][keep][:, _columns(clf, ps, attr)]
            for k, cls in enumerate(ps.classes[attr]):
                ci = bootstrap_ci(probs[:, k], lambda x: x.mean(-1), n_boot=max(config.metrics.bootstrap, 1),
                                  seed=config.metrics.seed, key=f"{cell.method}/{cell.prompt_id}/{attr}/{cls}",
                                  vectorized=True)
                rows.append({"method": cell.method, "prompt_set": ps.name, "prompt_id": cell.prompt_id,
                             "classifier": name, "attribute": attr, "class": cls,
                             "configured": round(float(known[attr][k]), 6), "measured": ci.value,
                             "ci_low": ci.low, "ci_high": ci.high, "n": int(keep.sum())})
    return rows


def score_truth(cells: Sequence[Cell], prompt_sets: Sequence[PromptSet], classifiers: dict[str, Classifier],
                truth: dict[str, dict] | None, config: RunConfig) -> list[dict]:
    """:func:`truth_for` over every prompt set with the run's first classifier (empty without a truth)."""
    if not truth:
        return []
    name, clf = next(iter(classifiers.items()))
    rows = []
    for ps in prompt_sets:
        rows += truth_for([c for c in cells if c.prompt_set == ps.name and not c.failed], ps, name, clf, truth, config)
    return rows


def score(cells: Sequence[Cell], prompt_sets: Sequence[PromptSet], classifiers: dict[str, Classifier],
          profile: Profile, config: RunConfig, failures: list[dict], cache_root: Path | None = None) -> list[dict]:
    """All metric records of a run. A method whose cells failed on a prompt is scored on the rest
    and the failure is listed in ``results.json`` (never averaged in as a number). With ``cache_root``,
    image embeddings and FID features are kept there and read back on a re-score."""
    if cache_root is not None:
        embedder, features = profile.embedder, profile.features
        if isinstance(getattr(embedder, "fingerprint", None), str) and embedder.fingerprint:
            embedder = CachedImageEncoder(embedder, cache_root / "embeddings")
        if isinstance(getattr(features, "fingerprint", None), str) and features.fingerprint:
            features = DiskMemo(features, features.fingerprint, cache_root / "features")
        profile = dataclasses.replace(profile, embedder=embedder, features=features)
    reference = None
    if config.metrics.fid and profile.features is not None:
        if config.reference_stats:
            reference = load_reference_stats(config.reference_stats, profile.features)
        elif profile.reference is not None:
            reference = reference_stats(profile.reference.images, profile.features, key=profile.reference.fingerprint)
    records: list[dict] = []
    clip_scores: dict[tuple[str, str, str], np.ndarray] = {}
    # the baseline's features serve every method's vs-baseline FID: extract each image set once
    features = None if profile.features is None else MemoizedExtractor(profile.features)
    methods = list(dict.fromkeys(c.method for c in cells))
    bar = progress.bar(len(prompt_sets) * len(methods), "scoring", unit="method")
    for ps in prompt_sets:
        baseline = [c for c in cells if c.method == config.baseline and c.prompt_set == ps.name and not c.failed]
        for method in methods:
            done = [c for c in cells if c.method == method and c.prompt_set == ps.name and not c.failed]
            if not done:
                continue
            recs = []
            comparable = baseline if method != config.baseline and len(baseline) == len(done) else None
            for name, clf in classifiers.items():
                recs += fairness_for(done, ps, name, clf, config)
                if comparable is not None:
                    recs += deltas_for(done, comparable, ps, name, clf, config)
            recs += quality_for(done, comparable, profile, config, reference, clip_scores, features)
            records += _label(recs, method=method, prompt_set=ps.name)
            bar.update(1)
    bar.close()
    return records


def cost_records(cost: dict[str, dict], prompt_sets: Sequence[str], baseline: str = "baseline") -> list[dict]:
    """Cost as metric records, per method and prompt set: UNet evaluations per image (``per-image``,
    and ``vs-baseline`` as a ratio). Seconds stay in ``results.json`` → ``cost`` only: a warm cache
    has no timing, and metrics must not depend on what was cached."""
    none = {"classifier": None, "attribute": None}
    base = cost.get(baseline, {}).get("unet_evals_per_image")
    records: list[dict] = []
    for method, c in cost.items():
        recs = []
        evals = c.get("unet_evals_per_image")
        if evals:
            recs.append(make_record(None, "unet_evals", "per-image", evals, 1))
            if base:
                recs.append(make_record(None, "unet_evals", "vs-baseline", evals / base, 1))
        for ps in prompt_sets:
            records += _label([{**none, **r} for r in recs], method=method, prompt_set=ps)
    return records
