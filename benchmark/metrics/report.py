"""Metric records in the results-format schema (docs/results-format.md), with bootstrap intervals.

A record is a flat dict with the keys ``prompt_id`` (None for the prompt-set aggregate), ``metric``,
``variant``, ``value``, ``ci_low``, ``ci_high``, ``n`` and ``higher_is_better``; the caller adds
``method``, ``prompt_set``, ``classifier`` and ``attribute``.

``fairness_records`` is the one function that turns per-image classifier probabilities into every
fairness number of a run, and the submission check calls it again on the stored predictions; it is
deterministic given ``seed`` and does not depend on the order of the prompts.

Fairness metrics and variants (formulas in ``fairness.py`` / ``cleam.py``):

| metric | variant | p̂ |
|---|---|---|
| fd | soft, hard | mean probabilities / argmax counts |
| fd | soft-cleam, hard-cleam | corrected with the confusion matrix (only when one is given) |
| spd | proportion-gap | hard, max_c p̂_c − min_c p̂_c |
| spd | group-conditioned | set level only: gap in "shows the named class" rate across named classes (≥ 2 needed) |
| entropy | soft, hard | normalised entropy |
| kl | soft, hard | KL(p̂ ‖ π), only when every π_c > 0 |
| deviation_ratio | hard | SelfDebias Δ, only when every π_c > 0 |
| invdiff_bias | hard | InvDiff Bias; the spread over prompts is the std of the per-prompt records |

Prompts that name a class of the attribute (``named``) aim at that class, not at π, so they are left out
of the distribution metrics and feed only the group-conditioned SPD.

Set-level value = mean over prompts of the per-prompt values; its interval resamples images within every
prompt at once (stratified). The image count ``n`` of a set record is the total over the prompts used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from benchmark.errors import DataError
from benchmark.metrics._checks import check_confusion, check_probs, target_or_uniform
from benchmark.metrics.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, percentile_interval, resample_indices, rng_for
from benchmark.metrics.cleam import corrected_distribution
from benchmark.metrics.fairness import (
    JOINT_SEP,
    deviation_ratio,
    fairness_discrepancy,
    invdiff_bias,
    joint_classes,
    joint_labels,
    joint_probs,
    joint_target,
    kl_divergence,
    normalized_entropy,
    statistical_parity_difference,
)

Record = dict[str, object]

HIGHER_IS_BETTER = {
    "fd": False,
    "spd": False,
    "entropy": True,
    "kl": False,
    "deviation_ratio": False,
    "invdiff_bias": False,
    "fid": False,
    "kid": False,
    "clip_t": True,
    "clip_i": True,
    "unet_evals": False,
    "seconds_per_image": False,
}


def make_record(
    prompt_id: str | None,
    metric: str,
    variant: str,
    value: float,
    n: int,
    ci: tuple[float, float] | None = None,
    higher_is_better: bool | None = None,
) -> Record:
    """One metric record; ``higher_is_better`` defaults to the metric's known direction."""
    if higher_is_better is None:
        higher_is_better = HIGHER_IS_BETTER[metric]
    return {
        "prompt_id": prompt_id,
        "metric": metric,
        "variant": variant,
        "value": float(value),
        "ci_low": None if ci is None else float(ci[0]),
        "ci_high": None if ci is None else float(ci[1]),
        "n": int(n),
        "higher_is_better": bool(higher_is_better),
    }


@dataclass
class _PromptData:
    pid: str
    soft: np.ndarray  # (K,) mean probabilities
    hard: np.ndarray  # (K,) argmax proportions
    soft_boot: np.ndarray | None  # (B, K)
    hard_boot: np.ndarray | None  # (B, K)
    labels: np.ndarray  # (n,)
    idx: np.ndarray | None  # (B, n) resampled image indices
    n: int


def _prompt_data(pid: str, probs: np.ndarray, labels: np.ndarray, n_boot: int, seed: int) -> _PromptData:
    n, k = probs.shape
    soft, hard = probs.mean(axis=0), np.bincount(labels, minlength=k) / n
    if n_boot == 0:
        return _PromptData(pid, soft, hard, None, None, labels, None, n)
    idx = resample_indices(n, n_boot, rng_for(seed, pid))
    # Gather per class column rather than probs[idx] (B, n, K): memory stays O(B·n) for large joint K.
    soft_boot = np.stack([probs[:, c][idx].sum(axis=1) for c in range(k)], axis=1) / n
    flat = (labels[idx] + k * np.arange(n_boot)[:, None]).ravel()
    hard_boot = np.bincount(flat, minlength=n_boot * k).reshape(n_boot, k) / n
    return _PromptData(pid, soft, hard, soft_boot, hard_boot, labels, idx, n)


def _distribution_metrics(
    target: np.ndarray, confusion: np.ndarray | None
) -> list[tuple[str, str, Callable[[np.ndarray, np.ndarray], np.ndarray]]]:
    """(metric, variant, f(soft p̂, hard p̂)) for every distribution metric, batched over leading axes."""
    specs: list[tuple[str, str, Callable]] = [
        ("fd", "soft", lambda s, h: fairness_discrepancy(s, target)),
        ("fd", "hard", lambda s, h: fairness_discrepancy(h, target)),
    ]
    if confusion is not None:
        specs += [
            ("fd", "soft-cleam", lambda s, h: fairness_discrepancy(corrected_distribution(s, confusion), target)),
            ("fd", "hard-cleam", lambda s, h: fairness_discrepancy(corrected_distribution(h, confusion), target)),
        ]
    specs += [
        ("spd", "proportion-gap", lambda s, h: statistical_parity_difference(h)),
        ("entropy", "soft", lambda s, h: normalized_entropy(s)),
        ("entropy", "hard", lambda s, h: normalized_entropy(h)),
    ]
    if (target > 0).all():
        specs += [
            ("kl", "soft", lambda s, h: kl_divergence(s, target)),
            ("kl", "hard", lambda s, h: kl_divergence(h, target)),
            ("deviation_ratio", "hard", lambda s, h: deviation_ratio(h, target)),
        ]
    specs.append(("invdiff_bias", "hard", lambda s, h: invdiff_bias(h)))
    return specs


def _ci(samples: np.ndarray | None, level: float) -> tuple[float, float] | None:
    if samples is None:
        return None
    low, high = percentile_interval(samples, level)
    return float(low), float(high)


def _records_from_labels(
    soft_by_prompt: Mapping[str, np.ndarray],
    labels_by_prompt: Mapping[str, np.ndarray],
    classes: list[str],
    target: np.ndarray | None,
    confusion: np.ndarray | None,
    named: Mapping[str, str | None] | None,
    n_boot: int,
    seed: int,
    level: float,
) -> list[Record]:
    k = len(classes)
    if not soft_by_prompt:
        raise DataError("fairness: no prompts (empty input)")
    if n_boot < 0:
        raise DataError(f"fairness: n_boot must be >= 0, got {n_boot}")
    t = target_or_uniform(target, k)
    c = None if confusion is None else check_confusion(confusion, k)
    named = dict(named or {})
    unknown = sorted(set(named) - set(soft_by_prompt))
    if unknown:
        raise DataError(f"fairness: named refers to prompt ids without predictions: {unknown[:5]}")
    class_index = {name: i for i, name in enumerate(classes)}
    for pid, cls in named.items():
        if cls is not None and cls not in class_index:
            raise DataError(f"fairness: prompt {pid!r} names class {cls!r}, not one of {classes}")

    data = {pid: _prompt_data(pid, soft_by_prompt[pid], labels_by_prompt[pid], n_boot, seed) for pid in soft_by_prompt}
    free = [pid for pid in soft_by_prompt if named.get(pid) is None]  # prompts aiming at the target π
    records: list[Record] = []

    for metric, variant, f in _distribution_metrics(t, c):
        values, samples = {}, {}
        for pid in free:
            d = data[pid]
            values[pid] = float(f(d.soft, d.hard))
            samples[pid] = None if d.soft_boot is None else np.asarray(f(d.soft_boot, d.hard_boot))
            records.append(make_record(pid, metric, variant, values[pid], d.n, _ci(samples[pid], level)))
        if free:
            # Sorted ids make the float sums independent of the caller's prompt order.
            ids = sorted(free)
            set_samples = None if n_boot == 0 else np.mean([samples[p] for p in ids], axis=0)
            set_value = float(np.mean([values[p] for p in ids]))
            records.append(
                make_record(None, metric, variant, set_value, sum(data[p].n for p in ids), _ci(set_samples, level))
            )

    groups: dict[str, list[str]] = {}
    for pid in sorted(p for p in soft_by_prompt if named.get(p) is not None):
        groups.setdefault(named[pid], []).append(pid)
    if len(groups) >= 2:
        rates, rate_samples, n_total = [], [], 0
        for cls, pids in sorted(groups.items()):
            hits = {p: (data[p].labels == class_index[cls]).astype(np.float64) for p in pids}
            n_g = sum(data[p].n for p in pids)
            n_total += n_g
            # Pooled over the group's images, as a selection rate P(Ŷ = named | A = group).
            rates.append(sum(hits[p].sum() for p in pids) / n_g)
            if n_boot:
                rate_samples.append(sum(hits[p][data[p].idx].sum(axis=1) for p in pids) / n_g)
        value = float(statistical_parity_difference(np.array(rates)))
        ci = None if not n_boot else _ci(np.asarray(statistical_parity_difference(np.stack(rate_samples, 1))), level)
        records.append(make_record(None, "spd", "group-conditioned", value, n_total, ci))
    return records


def fairness_records(
    probs_by_prompt: dict[str, np.ndarray],
    classes: list[str],
    target: np.ndarray | None = None,
    confusion: np.ndarray | None = None,
    named: dict[str, str | None] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> list[Record]:
    """Every fairness metric and variant for one attribute, per prompt and for the prompt set.

    ``probs_by_prompt``: prompt id → (N, K) per-image probabilities, columns in ``classes`` order.
    ``target``: π over ``classes`` (uniform when None). ``confusion``: C[i, j] = P(pred j | true i) of the
    classifier, enabling the ``*-cleam`` FD variants. ``named``: prompt id → the class its text names
    (None or absent for prompts that name none). ``n_boot=0`` skips the intervals (ci_low/ci_high None).
    """
    soft = {pid: check_probs(p, f"probs[{pid!r}]", len(classes)) for pid, p in probs_by_prompt.items()}
    labels = {pid: p.argmax(axis=1) for pid, p in soft.items()}
    return _records_from_labels(soft, labels, classes, target, confusion, named, n_boot, seed, level)


def intersectional_records(
    probs_a_by_prompt: dict[str, np.ndarray],
    probs_b_by_prompt: dict[str, np.ndarray],
    classes_a: list[str],
    classes_b: list[str],
    target_a: np.ndarray | None = None,
    target_b: np.ndarray | None = None,
    confusion_a: np.ndarray | None = None,
    confusion_b: np.ndarray | None = None,
    named_a: dict[str, str | None] | None = None,
    named_b: dict[str, str | None] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> list[Record]:
    """``fairness_records`` over the joint attribute a×b (the caller labels the attribute "a×b").

    Joint soft probabilities are q_a ⊗ q_b, the hard joint class is (argmax_a, argmax_b), the target is
    π_a ⊗ π_b and the joint confusion is C_a ⊗ C_b (Kronecker; errors of the two heads independent given
    the true classes). A prompt naming a class of both attributes is a named joint class "ca×cb"; a prompt
    naming only one of them targets neither π nor a joint class and is left out.
    """
    if set(probs_a_by_prompt) != set(probs_b_by_prompt):
        raise DataError("intersectional: attributes a and b have predictions for different prompt ids")
    named_a, named_b = named_a or {}, named_b or {}
    ka, kb = len(classes_a), len(classes_b)
    soft, labels, named = {}, {}, {}
    for pid in probs_a_by_prompt:
        na, nb = named_a.get(pid), named_b.get(pid)
        if (na is None) != (nb is None):
            continue
        pa = check_probs(probs_a_by_prompt[pid], f"probs_a[{pid!r}]", ka)
        pb = check_probs(probs_b_by_prompt[pid], f"probs_b[{pid!r}]", kb)
        soft[pid], labels[pid] = joint_probs(pa, pb), joint_labels(pa, pb)
        named[pid] = None if na is None else f"{na}{JOINT_SEP}{nb}"
    if not soft:
        return []
    confusion = None
    if confusion_a is not None and confusion_b is not None:
        confusion = np.kron(
            check_confusion(confusion_a, ka, "confusion_a"), check_confusion(confusion_b, kb, "confusion_b")
        )
    target = joint_target(target_a, target_b, ka, kb)
    return _records_from_labels(
        soft, labels, joint_classes(classes_a, classes_b), target, confusion, named, n_boot, seed, level
    )


def mean_records(
    values_by_prompt: dict[str, np.ndarray],
    metric: str,
    variant: str,
    higher_is_better: bool | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> list[Record]:
    """Records for a per-image score averaged per prompt and over prompts (e.g. clip_t, clip_i, no_subject_rate)."""
    if not values_by_prompt:
        raise DataError(f"{metric}: no prompts (empty input)")
    records, values, samples, ns = [], {}, {}, {}
    for pid, v in values_by_prompt.items():
        v = np.asarray(v, dtype=np.float64)
        if v.ndim != 1 or v.size == 0:
            raise DataError(
                f"{metric}: prompt {pid!r} needs a non-empty 1-D array of per-image values, got shape {v.shape}"
            )
        if not np.isfinite(v).all():
            raise DataError(f"{metric}: prompt {pid!r} has NaN or Inf values")
        ns[pid], values[pid] = v.size, float(v.mean())
        samples[pid] = None if n_boot == 0 else v[resample_indices(v.size, n_boot, rng_for(seed, pid))].mean(axis=1)
        records.append(
            make_record(pid, metric, variant, values[pid], v.size, _ci(samples[pid], level), higher_is_better)
        )
    ids = sorted(values_by_prompt)
    set_samples = None if n_boot == 0 else np.mean([samples[p] for p in ids], axis=0)
    records.append(
        make_record(
            None,
            metric,
            variant,
            float(np.mean([values[p] for p in ids])),
            sum(ns.values()),
            _ci(set_samples, level),
            higher_is_better,
        )
    )
    return records
