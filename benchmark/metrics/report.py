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
| fd | soft-cleam, hard-cleam | corrected with the soft / hard confusion matrix (only when that one is given) |
| spd | proportion-gap | hard, max_c p̂_c − min_c p̂_c |
| spd | group-conditioned | set level only: gap in "shows the named class" rate across named classes (≥ 2 needed) |
| entropy | soft, hard | normalised entropy |
| kl | soft, hard | KL(p̂ ‖ π), only when every π_c > 0 |
| deviation_ratio | hard | SelfDebias Δ, only when every π_c > 0 |
| invdiff_bias | hard | InvDiff Bias; the spread over prompts is the std of the per-prompt records |

Prompts that name a class of the attribute (``named``) aim at that class, not at π, so they are left out
of the distribution metrics and feed only the group-conditioned SPD.

Set-level value = mean over prompts of the per-prompt values. The image count ``n`` of a set record is
the total over the prompts used.

Intervals of the distribution metrics (everything in the table above but the group-conditioned SPD)
are valid at the boundary, where the truth is fair: FD, KL, SPD and the rest are distances from the
target, so when the truth sits on the target their sampling distribution lies entirely on one side,
and a percentile bootstrap interval of the metric almost never reaches the fair value. Instead, per
prompt, the bootstrap draws of the class shares p̂* define a confidence region for the true shares
(points within the ``level`` quantile of their Mahalanobis distance from p̂, in the K − 1 free
coordinates, and never less than the χ²(K − 1) quantile), and the interval is the range of the metric over that region: over the draws inside
it, points on its surface, the estimate itself, and the target π and the uniform distribution when the region contains them
(for the CLEAM variants, the observed shares Cᵀπ and Cᵀu that correct to them). It reaches the fair
value exactly when the data cannot rule the target out. A set's interval takes every prompt's range at
the Bonferroni level 1 − (1 − level)/P and averages the bounds: all P regions cover together with
probability at least ``level``, so the mean of the metric over prompts lies in the averaged range.
Such intervals are conservative (wider than a percentile interval away from the boundary); compare two
methods with the paired differences of :func:`paired_delta_records`, which are much narrower.

The CLEAM variants' intervals include the confusion matrix's own sampling error where the labelled
images behind its rows are given (``confusion_n``): every resample is corrected with its own matrix
drawn from the matrix's sampling distribution (``cleam.sample_confusions``), the region is built from
those corrected draws seen through the measured matrix, and the point estimate keeps the measured
matrix. Without counts, or for more than ``cleam.MAX_PROPAGATED_K`` classes, the matrix is taken as exact.

``target_p`` (per prompt, higher = more consistent with the target) is the p-value of Pearson's
chi-square test of the hard counts against π; the set record combines the prompts' p-values by
Fisher's method (all prompts consistent with the target).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.errors import DataError
from benchmark.metrics._checks import check_confusion, check_counts, check_probs, target_or_uniform
from benchmark.metrics.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, percentile_interval, resample_indices, rng_for
from benchmark.metrics.cleam import (
    MAX_PROPAGATED_K,
    corrected_distribution,
    corrected_distributions,
    sample_confusions,
    unconstrained_inverses,
)
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
    "target_p": True,
    "delta_fd": False,
    "delta_fid": False,
    "delta_clip_t": True,
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


# A run computes one prompt's bootstrap draws many times over: for every attribute and classifier the
# same image indices, and for the paired differences the same method's and the baseline's draws again
# (both FD variants, every method). Both are remembered here, keyed by their inputs (the probabilities'
# bytes included), so each is computed once; the arrays are read-only.
_INDICES: dict[tuple[int, int, int, str], np.ndarray] = {}
_PROMPT_DATA: dict[str, _PromptData] = {}
_MEMO_ENTRIES = 256


def _remember(memo: dict, key: Any, make: Callable[[], Any]) -> Any:
    if key in memo:
        memo[key] = memo.pop(key)  # most recently used last
        return memo[key]
    if len(memo) >= _MEMO_ENTRIES:
        memo.pop(next(iter(memo)))
    memo[key] = value = make()
    return value


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _resampled(n: int, n_boot: int, seed: int, pid: str) -> np.ndarray:
    """``resample_indices(n, n_boot, rng_for(seed, pid))``, drawn once per run (read-only)."""
    return _remember(_INDICES, (n, n_boot, seed, pid),
                     lambda: _frozen(resample_indices(n, n_boot, rng_for(seed, pid))))


def _prompt_data(pid: str, probs: np.ndarray, labels: np.ndarray, n_boot: int, seed: int) -> _PromptData:
    """One prompt's shares and their bootstrap draws (remembered by their inputs; see above)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=20)
    for part in (probs, labels):  # computed below from the arrays as given (their layout can matter to sums)
        digest.update(f"{part.dtype}{part.shape}{part.strides}".encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update(f"{pid}\x00{n_boot}\x00{seed}".encode())
    return _remember(_PROMPT_DATA, digest.hexdigest(), lambda: _compute_prompt_data(pid, probs, labels, n_boot, seed))


def _compute_prompt_data(pid: str, probs: np.ndarray, labels: np.ndarray, n_boot: int, seed: int) -> _PromptData:
    n, k = probs.shape
    soft, hard = probs.mean(axis=0), np.bincount(labels, minlength=k) / n
    if n_boot == 0:
        return _PromptData(pid, _frozen(soft), _frozen(hard), None, None, _frozen(labels.copy()), None, n)
    idx = _resampled(n, n_boot, seed, pid)
    # Gather per class column rather than probs[idx] (B, n, K): memory stays O(B·n) for large joint K.
    soft_boot = np.stack([probs[:, c][idx].sum(axis=1) for c in range(k)], axis=1) / n
    flat = (labels[idx] + k * np.arange(n_boot)[:, None]).ravel()
    hard_boot = np.bincount(flat, minlength=n_boot * k).reshape(n_boot, k) / n
    return _PromptData(pid, *(_frozen(a) for a in (soft, hard, soft_boot, hard_boot, labels.copy())), idx, n)


@dataclass(frozen=True)
class _Spec:
    """One distribution metric: ``f`` of the shares taken from ``source`` ("soft" or "hard"), after the
    CLEAM correction with ``confusion`` when it is given."""

    metric: str
    variant: str
    source: str
    f: Callable[[np.ndarray], np.ndarray]
    confusion: np.ndarray | None = None

    def __call__(self, shares: np.ndarray) -> np.ndarray:
        return self.f(shares if self.confusion is None else corrected_distribution(shares, self.confusion))

    def observed(self, truth: np.ndarray) -> np.ndarray:
        """The shares the classifier is expected to report when the true shares are ``truth``."""
        return truth if self.confusion is None else self.confusion.T @ truth


def _distribution_metrics(target: np.ndarray, confusion: np.ndarray | None,
                          soft_confusion: np.ndarray | None = None) -> list[_Spec]:
    """Every distribution metric, batched over leading axes. ``confusion`` (argmax) corrects hard shares,
    ``soft_confusion`` (mean probabilities) soft ones: each CLEAM variant needs its own matrix."""
    def fd(d):
        return fairness_discrepancy(d, target)

    specs = [_Spec("fd", "soft", "soft", fd), _Spec("fd", "hard", "hard", fd)]
    if soft_confusion is not None:
        specs.append(_Spec("fd", "soft-cleam", "soft", fd, soft_confusion))
    if confusion is not None:
        specs.append(_Spec("fd", "hard-cleam", "hard", fd, confusion))
    specs += [
        _Spec("spd", "proportion-gap", "hard", statistical_parity_difference),
        _Spec("entropy", "soft", "soft", normalized_entropy),
        _Spec("entropy", "hard", "hard", normalized_entropy),
    ]
    if (target > 0).all():
        specs += [
            _Spec("kl", "soft", "soft", lambda d: kl_divergence(d, target)),
            _Spec("kl", "hard", "hard", lambda d: kl_divergence(d, target)),
            _Spec("deviation_ratio", "hard", "hard", lambda d: deviation_ratio(d, target)),
        ]
    specs.append(_Spec("invdiff_bias", "hard", "hard", invdiff_bias))
    return specs


@functools.lru_cache(maxsize=4096)
def _chi2_ppf(level: float, dof: int) -> float:
    """``scipy.stats.chi2.ppf(level, dof)``, remembered (the same few values are asked for thousands of times).
    From ``scipy.special``, as ``chi2`` computes it: ``scipy.stats`` takes most of a second to import."""
    from scipy.special import gammaincinv

    return float(2 * gammaincinv(dof / 2, level))


def _chi2_sf(statistic: float, dof: int) -> float:
    """``scipy.stats.chi2.sf(statistic, dof)``, from ``scipy.special`` as ``chi2`` computes it."""
    from scipy.special import chdtrc

    return float(chdtrc(dof, statistic)) if dof >= 1 else float("nan")  # no test without a degree of freedom


class _Region:
    """Bootstrap-calibrated confidence region for one prompt's class shares (see the module doc).

    For hard shares (counts of ``n`` images) a point's membership is Pearson's chi-square test of the
    counts against it, with Yates' continuity correction (the score test, whose covariance is the point's own and which holds its level
    better at small n than the draws' spread); for soft shares it is the Mahalanobis distance.

    For a CLEAM variant whose matrix's sampling error is propagated, ``boot`` holds the draws
    y_b = Cᵀ C*_b⁻ᵀ p̂*_b (each resample as the measured C sees it once corrected with its own drawn
    matrix C*_b; :func:`_propagated`) and ``noise`` the drawn matrices (B, K, K): the Mahalanobis
    distances then include the matrix's error, and the
    hard test's statistic is scaled by δᵀ(Σ_x + Σ_C)⁻¹δ / δᵀΣ_x⁻¹δ, where δ = p̂ − Cᵀπ, Σ_x the
    multinomial covariance of p̂ at Cᵀπ and Σ_C the covariance of C*ᵀπ over the drawn matrices (for K = 2
    this is exactly the score test with the variance of p̂ − Ĉᵀπ; 1 when the matrix is exact)."""

    def __init__(self, center: np.ndarray, boot: np.ndarray, n: int | None = None,
                 noise: np.ndarray | None = None) -> None:
        self.center = center
        self.n = n
        self.noise = noise
        free = boot[:, :-1] - center[:-1]
        cov = np.atleast_2d(np.cov(free, rowvar=False))
        self.precision = np.linalg.pinv(cov, rcond=1e-10, hermitian=True)
        self.projector = cov @ self.precision  # onto the directions the draws vary in
        self.distance = np.einsum("bi,ij,bj->b", free, self.precision, free)
        self.dof = max(int(np.linalg.matrix_rank(self.precision)), 1)
        self._thresholds: dict[float, float] = {}
        self._surface: dict[float, np.ndarray] = {}
        self._contains: dict[tuple, bool] = {}  # the same special points are tested for every metric

    def threshold(self, level: float) -> float:
        # The bootstrap quantile, floored at the asymptotic χ²(K − 1) one: with few images or a
        # discrete (hard) statistic the draws alone make the region too small at the boundary.
        if level not in self._thresholds:
            self._thresholds[level] = max(float(np.quantile(self.distance, level, method="higher")),
                                          _chi2_ppf(level, self.dof))
        return self._thresholds[level]

    def contains(self, point: np.ndarray, level: float, truth: np.ndarray | None = None) -> bool:
        """Whether the region holds ``point`` (observed shares; ``truth``: the true shares they come
        from, needed to weigh the matrix's error into the hard test)."""
        key = (level, point.dtype.str, point.shape, point.tobytes(), None if truth is None else truth.tobytes())
        if key not in self._contains:
            self._contains[key] = self._test(point, level, truth)
        return self._contains[key]

    def _test(self, point: np.ndarray, level: float, truth: np.ndarray | None) -> bool:
        if self.n is not None:
            if (self.center[point <= 0] > 0).any():
                return False  # counts in a class the point rules out
            pos = point > 0
            # Yates' continuity correction: counts are whole numbers, and without it the test's real
            # level falls below nominal at small n (measured: 0.93 at n = 64, K = 2)
            gap = np.clip(np.abs(self.center - point) * self.n - 0.5, 0.0, None)
            stat = float((gap[pos] ** 2 / (point[pos] * self.n)).sum())
            if self.noise is not None and truth is not None:
                stat *= self._matrix_share(point, truth)
            return stat <= _chi2_ppf(level, max(int(pos.sum()) - 1, 1)) + 1e-12
        x = point[:-1] - self.center[:-1]
        if np.abs(x - self.projector @ x).max() > 1e-9:  # off the directions the data can move in
            return False
        return float(x @ self.precision @ x) <= self.threshold(level) + 1e-12


    def _matrix_share(self, point: np.ndarray, truth: np.ndarray) -> float:
        """δᵀ(Σ_x + Σ_C)⁺δ / δᵀΣ_x⁺δ in the K − 1 free coordinates (see the class doc)."""
        delta = (self.center - point)[:-1]
        sx = ((np.diag(point) - np.outer(point, point)) / self.n)[:-1, :-1]
        observed = np.einsum("i,bij->bj", truth, self.noise)[:, :-1]
        sc = np.atleast_2d(np.cov(observed, rowvar=False))
        m0 = float(delta @ np.linalg.pinv(sx, hermitian=True) @ delta)
        m1 = float(delta @ np.linalg.pinv(sx + sc, hermitian=True) @ delta)
        return min(m1 / m0, 1.0) if m0 > 1e-300 else 1.0

    def boundary(self, boot: np.ndarray, level: float) -> np.ndarray:
        """Points on the region's surface: each draw moved along its direction from the centre until its
        distance is the threshold (kept on the simplex), so the range reaches the region's edge. Computed
        once per level: every metric of the prompt's shares ranges over the same points."""
        if level not in self._surface:
            moved = self.distance > 0
            scale = np.sqrt(self.threshold(level) / self.distance[moved])[:, None]
            points = np.clip(self.center + (boot[moved] - self.center) * scale, 0.0, None)
            self._surface[level] = points / points.sum(axis=1, keepdims=True)
        return self._surface[level]


def _region_intervals(spec: _Spec, value: float, boot: np.ndarray, boot_values: np.ndarray, region: _Region,
                      levels: tuple[float, ...], special: list[tuple[np.ndarray, float]]) -> list[tuple[float, float]]:
    """Range of ``spec`` over the region at each of ``levels``: the draws inside it, points on its
    surface, the estimate, and the special points (true shares, metric value) whose observed shares the
    region contains. The surfaces of all levels go through the metric in one call (each row's value is
    its own, so batching them changes no number)."""
    edges = [region.boundary(boot, level) for level in levels]
    on_edge = np.asarray(spec(np.concatenate(edges)), dtype=np.float64).ravel() if sum(map(len, edges)) else np.empty(0)
    out, start = [], 0
    for level, edge in zip(levels, edges, strict=True):
        inside = boot_values[region.distance <= region.threshold(level)]
        candidates = [inside, on_edge[start:start + len(edge)],
                      np.array([v for truth, v in special if region.contains(spec.observed(truth), level, truth)])]
        start += len(edge)
        flat = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in candidates])
        out.append((_first_extreme(value, flat, lowest=True), _first_extreme(value, flat, lowest=False)))
    return out


def _first_extreme(first: float, rest: np.ndarray, lowest: bool) -> float:
    """``min([first, *rest])`` (or ``max``) exactly as Python's builtin gives it, from numpy: a NaN first
    is kept, later NaNs are passed over, and of equal values (0.0 and -0.0) the first one wins."""
    first = float(first)
    if first != first:
        return first
    rest = rest[~np.isnan(rest)]
    if not rest.size:
        return first
    m = rest.min() if lowest else rest.max()
    if not (m < first if lowest else m > first):
        return first
    return float(rest[np.flatnonzero(rest == m)[0]])


def _per_prompt(confusion: np.ndarray | Mapping[str, np.ndarray] | None, k: int, name: str,
                prompts: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """``confusion`` as one checked matrix per prompt id (a single matrix serves every prompt)."""
    if confusion is None:
        return None
    if isinstance(confusion, Mapping):
        missing = sorted(set(prompts) - set(confusion))
        if missing:
            raise DataError(f"fairness: {name} has no matrix for prompts {missing[:5]}")
        return {pid: check_confusion(confusion[pid], k, f"{name}[{pid!r}]") for pid in prompts}
    matrix = check_confusion(confusion, k, name)
    return dict.fromkeys(prompts, matrix)


def _counts_per_prompt(counts: np.ndarray | Mapping[str, np.ndarray | None] | None, k: int, name: str,
                       prompts: Mapping[str, Any]) -> dict[str, np.ndarray | None] | None:
    """``counts`` (labelled images per true class behind a matrix's rows) per prompt id: one vector for
    every prompt, or one per prompt id (None or absent: that prompt's matrix has no counts)."""
    if counts is None:
        return None
    if isinstance(counts, Mapping):
        return {pid: None if counts.get(pid) is None else check_counts(counts[pid], k, f"{name}[{pid!r}]")
                for pid in prompts}
    vector = check_counts(counts, k, name)
    return dict.fromkeys(prompts, vector)


# A prompt's calibration for one CLEAM variant: the (matrix, counts) factors whose Kronecker product is
# its matrix (one factor for an attribute, two for a joint attribute a×b).
Calibration = tuple[tuple[np.ndarray, np.ndarray], ...]


def _calibration(matrices: Mapping[str, list[dict[str, np.ndarray] | None]],
                 counts: list[dict[str, np.ndarray | None] | None], prompts: Mapping[str, Any]
                 ) -> dict[str, dict[str, Calibration]] | None:
    """Per CLEAM variant and prompt id, the factors to draw that prompt's matrix from (prompts whose
    every factor has counts); ``matrices``: variant → per factor, the per-prompt matrices."""
    if any(n is None for n in counts):
        return None
    out: dict[str, dict[str, Calibration]] = {}
    for variant, per_factor in matrices.items():
        if any(m is None for m in per_factor):
            continue
        out[variant] = {pid: tuple((m[pid], n[pid]) for m, n in zip(per_factor, counts, strict=True))
                        for pid in prompts if all(n[pid] is not None for n in counts)}
    return out


def _propagated(spec: _Spec, shares: np.ndarray, factors: Calibration, seed: int,
                pid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each resample of ``shares`` (B, K) corrected with its own matrix drawn from the calibration's
    sampling distribution (``cleam.sample_confusions``; a joint matrix is the Kronecker product of its
    factors' draws). Returns, for the region, the shares y_b = Cᵀ C*_b⁻ᵀ p̂*_b that the measured matrix
    C corrects as the drawn C*_b corrects p̂*_b (before the simplex constraint; y_b = p̂*_b when
    C*_b = C), the metric of each resample corrected with its own matrix, and the drawn matrices."""
    n_boot, k = shares.shape
    rng = rng_for(seed, f"{pid}\x00{spec.variant}\x00confusion")
    draws = None
    for matrix, counts in factors:
        m = sample_confusions(matrix, counts, spec.source == "hard", n_boot, rng)
        draws = m if draws is None else np.einsum("bij,bkl->bikjl", draws, m).reshape(n_boot, k, k)
    inverses = unconstrained_inverses(shares, draws)
    corrected = corrected_distributions(shares, draws, inverses)
    y = inverses @ spec.confusion
    bad = ~np.isfinite(y).all(axis=1)
    if bad.any():  # a (near-)singular draw: its correction's shift, mapped back with C
        y[bad] = shares[bad] + (corrected[bad] - corrected_distribution(shares[bad], spec.confusion)) @ spec.confusion
    return y, np.asarray(spec.f(corrected)), draws


def _for_prompt(spec: _Spec, pid: str, c: dict | None, sc: dict | None) -> _Spec:
    """``spec`` with the prompt's own confusion matrix (CLEAM variants only)."""
    if spec.confusion is None:
        return spec
    chosen = (sc if spec.variant == "soft-cleam" else c)[pid]
    return spec if chosen is spec.confusion else dataclasses.replace(spec, confusion=chosen)


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
    soft_confusion: np.ndarray | None = None,
    calibration: dict[str, dict[str, Calibration]] | None = None,
) -> list[Record]:
    k = len(classes)
    if not soft_by_prompt:
        raise DataError("fairness: no prompts (empty input)")
    if n_boot < 0:
        raise DataError(f"fairness: n_boot must be >= 0, got {n_boot}")
    t = target_or_uniform(target, k)
    # a matrix for every prompt, or one per prompt id (content-specific CLEAM: cleam.matrices_by_prompt)
    c = _per_prompt(confusion, k, "confusion", soft_by_prompt)
    sc = _per_prompt(soft_confusion, k, "soft_confusion", soft_by_prompt)
    named = dict(named or {})
    unknown = sorted(set(named) - set(soft_by_prompt))
    if unknown:
        raise DataError(f"fairness: named refers to prompt ids without predictions: {unknown[:5]}")
    class_index = {name: i for i, name in enumerate(classes)}
    for pid, cls in named.items():
        if cls is not None and cls not in class_index:
            raise DataError(f"fairness: prompt {pid!r} names class {cls!r}, not one of {classes}")

    data = {pid: _prompt_data(pid, soft_by_prompt[pid], labels_by_prompt[pid], n_boot, seed) for pid in soft_by_prompt}
    free = sorted(pid for pid in soft_by_prompt if named.get(pid) is None)  # prompts aiming at the target π
    records: list[Record] = []
    regions = {} if n_boot == 0 else {
        (pid, src): _Region(getattr(data[pid], src), getattr(data[pid], f"{src}_boot"), data[pid].n if src == "hard" else None)
        for pid in free for src in ("soft", "hard")}
    set_level = 1 - (1 - level) / max(len(free), 1)  # Bonferroni: all prompts' regions at once
    uniform = np.full(k, 1.0 / k)

    first = next(iter(soft_by_prompt))
    for general in _distribution_metrics(t, None if c is None else c[first], None if sc is None else sc[first]):
        special = [(t, float(general.f(t))), (uniform, float(general.f(uniform)))]
        values, set_bounds = {}, []
        for pid in free:
            spec = _for_prompt(general, pid, c, sc)
            d = data[pid]
            values[pid] = float(spec(getattr(d, spec.source)))
            ci = None
            factors = None if spec.confusion is None else (calibration or {}).get(spec.variant, {}).get(pid)
            if n_boot and factors and k <= MAX_PROPAGATED_K:
                # the matrix's own sampling error: every resample corrected with its own drawn matrix
                shares, boot, noise = _propagated(spec, getattr(d, f"{spec.source}_boot"), factors, seed, pid)
                region = _Region(getattr(d, spec.source), shares, d.n if spec.source == "hard" else None, noise)
                ci, set_ci = _region_intervals(spec, values[pid], shares, boot, region, (level, set_level), special)
                set_bounds.append(set_ci)
            elif n_boot:
                shares = getattr(d, f"{spec.source}_boot")
                boot = np.asarray(spec(shares))
                region = regions[(pid, spec.source)]
                ci, set_ci = _region_intervals(spec, values[pid], shares, boot, region, (level, set_level), special)
                set_bounds.append(set_ci)
            records.append(make_record(pid, spec.metric, spec.variant, values[pid], d.n, ci))
        spec = general
        if free:
            # Sorted ids make the float sums independent of the caller's prompt order.
            set_ci = None if not n_boot else (float(np.mean([b[0] for b in set_bounds])),
                                              float(np.mean([b[1] for b in set_bounds])))
            set_value = float(np.mean([values[p] for p in free]))
            records.append(make_record(None, spec.metric, spec.variant, set_value, sum(data[p].n for p in free), set_ci))
    records += _target_tests(data, free, t)

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


def _target_tests(data: Mapping[str, _PromptData], free: list[str], target: np.ndarray) -> list[Record]:
    """Pearson's chi-square test of each prompt's hard counts against π, and Fisher's combination
    (``scipy.stats.chisquare`` and ``combine_pvalues(method="fisher")``, bit for bit, except that a
    prompt whose target leaves one class has no test, p = 1: chisquare's rounding could make it 0)."""
    records, pvalues = [], []
    for pid in free:
        d = data[pid]
        counts = d.hard * d.n
        expected = target * d.n
        keep = expected > 0  # a class the target rules out carries no information here
        observed, expect = counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum()
        p = _chi2_sf(float(((observed - expect) ** 2 / expect).sum()), int(keep.sum()) - 1)
        p = 1.0 if not np.isfinite(p) else p
        pvalues.append(p)
        records.append(make_record(pid, "target_p", "chi-square", p, d.n))
    if free:
        combined = _chi2_sf(float(-2 * np.sum(np.log(np.clip(pvalues, 1e-300, 1.0)))), 2 * len(pvalues))
        records.append(make_record(None, "target_p", "chi-square-fisher", combined, sum(data[p].n for p in free)))
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
    soft_confusion: np.ndarray | None = None,
    confusion_n: np.ndarray | Mapping[str, np.ndarray | None] | None = None,
) -> list[Record]:
    """Every fairness metric and variant for one attribute, per prompt and for the prompt set.

    ``probs_by_prompt``: prompt id → (N, K) per-image probabilities, columns in ``classes`` order.
    ``target``: π over ``classes`` (uniform when None). ``confusion``: C[i, j] = P(pred j | true i) of the
    classifier, enabling ``hard-cleam``; ``soft_confusion``: C[i, j] = E[q_j | true i], enabling
    ``soft-cleam``. ``confusion_n``: the labelled images per true class that the rows of both matrices
    were measured on ((K,), or per prompt id like the matrices; None or absent for a prompt whose
    matrix has none); with it the ``*-cleam`` intervals include the matrices' sampling error (each
    resample corrected with its own drawn matrix, up to K = ``cleam.MAX_PROPAGATED_K``), without it they
    take the matrix as exact. ``named``: prompt id → the class its text names
    (None or absent for prompts that name none). ``n_boot=0`` skips the intervals (ci_low/ci_high None).
    """
    soft = {pid: check_probs(p, f"probs[{pid!r}]", len(classes)) for pid, p in probs_by_prompt.items()}
    labels = {pid: p.argmax(axis=1) for pid, p in soft.items()}
    k = len(classes)
    calibration = None
    if confusion_n is not None:
        calibration = _calibration({"hard-cleam": [_per_prompt(confusion, k, "confusion", soft)],
                                    "soft-cleam": [_per_prompt(soft_confusion, k, "soft_confusion", soft)]},
                                   [_counts_per_prompt(confusion_n, k, "confusion_n", soft)], soft)
    return _records_from_labels(soft, labels, classes, target, confusion, named, n_boot, seed, level, soft_confusion,
                                calibration)


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
    soft_confusion_a: np.ndarray | None = None,
    soft_confusion_b: np.ndarray | None = None,
    confusion_n_a: np.ndarray | Mapping[str, np.ndarray | None] | None = None,
    confusion_n_b: np.ndarray | Mapping[str, np.ndarray | None] | None = None,
) -> list[Record]:
    """``fairness_records`` over the joint attribute a×b (the caller labels the attribute "a×b").

    Joint soft probabilities are q_a ⊗ q_b, the hard joint class is (argmax_a, argmax_b), the target is
    π_a ⊗ π_b and the joint confusion is C_a ⊗ C_b (Kronecker; errors of the two heads independent given
    the true classes). A prompt naming a class of both attributes is a named joint class "ca×cb"; a prompt
    naming only one of them targets neither π nor a joint class and is left out. With the counts of both
    sides (``confusion_n_a``, ``confusion_n_b``), each resample's joint matrix is the product of a draw
    of C_a and one of C_b.
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
    def joint(ca, cb, name: str) -> dict[str, np.ndarray] | None:
        """C_a ⊗ C_b per prompt (each side a matrix, or one per prompt id)."""
        if ca is None or cb is None:
            return None
        pa, pb = _per_prompt(ca, ka, f"{name}_a", soft), _per_prompt(cb, kb, f"{name}_b", soft)
        return {pid: np.kron(pa[pid], pb[pid]) for pid in soft}

    target = joint_target(target_a, target_b, ka, kb)
    calibration = None
    if confusion_n_a is not None and confusion_n_b is not None:
        calibration = _calibration(
            {"hard-cleam": [_per_prompt(confusion_a, ka, "confusion_a", soft), _per_prompt(confusion_b, kb, "confusion_b", soft)],
             "soft-cleam": [_per_prompt(soft_confusion_a, ka, "soft_confusion_a", soft),
                            _per_prompt(soft_confusion_b, kb, "soft_confusion_b", soft)]},
            [_counts_per_prompt(confusion_n_a, ka, "confusion_n_a", soft),
             _counts_per_prompt(confusion_n_b, kb, "confusion_n_b", soft)], soft)
    return _records_from_labels(
        soft, labels, joint_classes(classes_a, classes_b), target, joint(confusion_a, confusion_b, "confusion"),
        named, n_boot, seed, level, joint(soft_confusion_a, soft_confusion_b, "soft_confusion"), calibration,
    )


def _paired_p(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is 0": twice the smaller tail, (count + 1)/(B + 1)."""
    b = len(samples)
    low, high = (np.count_nonzero(samples <= 0) + 1) / (b + 1), (np.count_nonzero(samples >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(low, high)))


def paired_delta_records(
    probs_by_prompt: dict[str, np.ndarray],
    base_by_prompt: dict[str, np.ndarray],
    classes: list[str],
    target: np.ndarray | None = None,
    named: dict[str, str | None] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> list[Record]:
    """Paired difference of soft and hard FD, method − baseline (``delta_fd``), per prompt and set.

    Row i of a prompt's two arrays must come from the same seed (the runner samples every method on
    the baseline's seeds). Each bootstrap draw resamples the same image indices in both, so the
    interval reflects the difference, not the two methods' separate noise. Records carry
    ``p_value``: the two-sided bootstrap p-value of "no difference". Prompts naming a class are left
    out, as for FD.
    """
    k = len(classes)
    t = target_or_uniform(target, k)
    named = named or {}
    free = sorted(p for p in probs_by_prompt if p in base_by_prompt and named.get(p) is None)
    records: list[Record] = []
    for variant in ("soft", "hard"):
        values, samples, ns = {}, {}, {}
        for pid in free:
            pm = check_probs(probs_by_prompt[pid], f"probs[{pid!r}]", k)
            pb = check_probs(base_by_prompt[pid], f"baseline probs[{pid!r}]", k)
            if pm.shape != pb.shape:
                raise DataError(f"paired: prompt {pid!r} has {len(pm)} images but the baseline {len(pb)}")
            dm, db = (_prompt_data(pid, p, p.argmax(axis=1), n_boot, seed) for p in (pm, pb))  # same draws
            values[pid] = float(fairness_discrepancy(getattr(dm, variant), t) - fairness_discrepancy(getattr(db, variant), t))
            ns[pid] = dm.n
            samples[pid] = None if not n_boot else (np.asarray(fairness_discrepancy(getattr(dm, f"{variant}_boot"), t))
                                                    - np.asarray(fairness_discrepancy(getattr(db, f"{variant}_boot"), t)))
        for pid in [*free, None]:
            if pid is None:
                if not free:
                    break
                value, boot, n = float(np.mean([values[p] for p in free])), (
                    None if not n_boot else np.mean([samples[p] for p in free], axis=0)), sum(ns.values())
            else:
                value, boot, n = values[pid], samples[pid], ns[pid]
            rec = make_record(pid, "delta_fd", variant, value, n, _ci(boot, level))
            rec["p_value"] = None if boot is None else _paired_p(boot)
            records.append(rec)
    return records


def mean_records(
    values_by_prompt: dict[str, np.ndarray],
    metric: str,
    variant: str,
    higher_is_better: bool | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    p_value: bool = False,
) -> list[Record]:
    """Records for a per-image score averaged per prompt and over prompts (e.g. clip_t, clip_i, no_subject_rate).

    With ``p_value`` (for paired differences, e.g. ``delta_clip_t``) each record also carries the
    two-sided bootstrap p-value of "the mean is 0"."""
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
    if p_value:
        for rec, pid in zip(records, [*values_by_prompt, None], strict=True):
            boot = set_samples if pid is None else samples[pid]
            rec["p_value"] = None if boot is None else _paired_p(boot)
    return records
