"""Turns generated images and their predictions into metric records (docs/results-format.md).

Fairness numbers come from :func:`benchmark.metrics.fairness_records` (the same function the
submission check uses to recompute them); image quality and alignment from the FID and CLIP
metrics, where the profile supplies a feature extractor and an embedder.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark import progress
from benchmark.cache import CachedImageEncoder, DiskMemo
from benchmark.cell import Cell
from benchmark.config import RunConfig
from benchmark.errors import DataError
from benchmark.hashing import hash_value
from benchmark.metrics import (
    fairness_records,
    intersectional_records,
    load_reference_stats,
    make_record,
    mean_records,
    paired_delta_records,
    reference_stats,
)
from benchmark.metrics.cleam import counts_by_prompt, matrices_by_prompt
from benchmark.metrics.fid import FeatureStats, extract_features
from benchmark.quality import Vectors, as_stored, quality_records
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


def counts_in_columns(counts: np.ndarray | dict[str, np.ndarray | None] | None, cols: list[int]):
    """Calibration counts per true class (one vector, or one per prompt) in the prompt set's class columns."""
    if counts is None:
        return None
    if isinstance(counts, dict):
        return {pid: None if n is None else np.asarray(n)[cols] for pid, n in counts.items()}
    return np.asarray(counts)[cols]


def fairness_for(cells: Sequence[Cell], ps: PromptSet, name: str, clf: Classifier, config: RunConfig) -> list[dict]:
    """Every fairness record of one method on one prompt set with one classifier."""
    named_of = {p.id: p.named for p in ps.prompts}
    text_of = {p.id: p.text for p in ps.prompts}
    attrs = [a for a in ps.attributes if a in clf.attributes]
    probs: dict[str, dict[str, np.ndarray]] = {a: {} for a in attrs}
    confusion: dict[str, np.ndarray | None] = {}
    soft_confusion: dict[str, np.ndarray | None] = {}
    confusion_n: dict[str, Any] = {}  # labelled images per true class behind each matrix (CLEAM intervals)
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
        confusion_n[attr] = counts_in_columns(counts_by_prompt(
            texts, getattr(clf, "confusion_n", {}).get(attr), getattr(clf, "confusion_n_by_content", {}).get(attr),
            getattr(clf, "confusion_by_content", {}).get(attr)), cols)
    boot = {"n_boot": config.metrics.bootstrap, "seed": config.metrics.seed}
    records: list[dict] = []
    for attr in attrs:
        if not probs[attr]:
            continue
        named = {pid: named_of[pid].get(attr) for pid in probs[attr]}
        recs = fairness_records(probs[attr], ps.classes[attr], ps.target.get(attr), confusion[attr], named,
                                soft_confusion=soft_confusion[attr], confusion_n=confusion_n[attr], **boot)
        records += _label(recs, classifier=name, attribute=attr)
    for a, b in combinations(attrs, 2):
        if not probs[a]:
            continue
        recs = intersectional_records(
            probs[a], probs[b], ps.classes[a], ps.classes[b], ps.target.get(a), ps.target.get(b),
            confusion[a], confusion[b], {p: named_of[p].get(a) for p in probs[a]},
            {p: named_of[p].get(b) for p in probs[b]}, soft_confusion_a=soft_confusion[a],
            soft_confusion_b=soft_confusion[b], confusion_n_a=confusion_n[a], confusion_n_b=confusion_n[b], **boot)
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


def vectors_of(cell: Cell, profile: Profile, texts: dict[str, np.ndarray]) -> Vectors:
    """The cell's FID features and CLIP image embeddings (computed once, kept on the cell for
    ``features.safetensors``); ``texts`` remembers each prompt's text embedding across cells."""
    if cell.vectors is None:
        feats = embs = text = None
        if profile.features is not None:
            feats = as_stored(extract_features(cell.images, profile.features))
        if profile.embedder is not None:
            embs = as_stored(np.concatenate([np.asarray(profile.embedder.encode_images(cell.images[i:i + 64]))
                                             for i in range(0, len(cell.images), 64)]))
            if cell.prompt not in texts:
                texts[cell.prompt] = as_stored(np.asarray(profile.embedder.encode_texts([cell.prompt]))[0])
            text = texts[cell.prompt]
        cell.vectors = Vectors(tuple(cell.seeds), feats, embs, text)
    return cell.vectors


def quality_for(cells: Sequence[Cell], baseline: Sequence[Cell] | None, profile: Profile, config: RunConfig,
                reference: Any, texts: dict[str, np.ndarray] | None = None) -> list[dict]:
    """FID (vs reference, vs baseline, paired ΔFID) and CLIP-T / ΔCLIP-T / CLIP-I records of one method
    on one prompt set, from each image's vectors (:func:`benchmark.quality.quality_records`)."""
    texts = {} if texts is None else texts
    if not config.metrics.fid:
        profile = dataclasses.replace(profile, features=None)
    if not config.metrics.clip:
        profile = dataclasses.replace(profile, embedder=None)
    mine = {c.prompt_id: vectors_of(c, profile, texts) for c in cells}
    base = None if baseline is None else {c.prompt_id: vectors_of(c, profile, texts) for c in baseline}
    return quality_records(mine, base, reference, config.metrics.bootstrap, config.metrics.seed)


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


def profile_reference_stats(profile: Profile, cache_root: Path | None) -> FeatureStats:
    """The reference set's FID statistics; with ``cache_root`` kept there under a key of the set's
    fingerprint (its recipe, the same on every CPU) and the extractor's, so a re-score neither renders
    nor reads the reference images."""
    ref, path = profile.reference, None
    if cache_root is not None:
        path = cache_root / "reference" / f"{hash_value([ref.fingerprint, profile.features.fingerprint])[:32]}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)

    def batches() -> Iterator[np.ndarray]:  # the batches reference_stats makes of an array: the same features
        images = ref.images
        yield from (images[i:i + 64] for i in range(0, len(images), 64))

    return reference_stats(batches, profile.features, cache_path=path, key=ref.fingerprint)


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
            reference = profile_reference_stats(profile, cache_root)
    records: list[dict] = []
    texts: dict[str, np.ndarray] = {}
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
            recs += quality_for(done, comparable, profile, config, reference, texts)
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
