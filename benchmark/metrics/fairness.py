"""Distribution fairness metrics for generated images.

Notation: K attribute classes, N images, q_i ∈ Δ^K the classifier output for image i (softmax, or the
one-hot of its argmax for *hard* variants), p̂ = (1/N) Σ_i q_i the class distribution, π the target
distribution (uniform u = 1/K unless stated).

Every function taking a distribution works on the last axis and accepts leading batch axes, so a
(B, K) stack of bootstrap distributions gives B values at once; a single (K,) distribution gives a float.
"""

from __future__ import annotations

import numpy as np

from benchmark.errors import DataError
from benchmark.metrics._checks import check_distribution, check_probs, scalar_or_array, target_or_uniform

JOINT_SEP = "×"


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) integer labels → (N, K) float one-hot rows."""
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def hard_labels(probs: np.ndarray) -> np.ndarray:
    """Argmax class per image; ties go to the lower class index (numpy's argmax)."""
    return check_probs(probs).argmax(axis=1)


def class_distribution(probs: np.ndarray, hard: bool = False) -> np.ndarray:
    """p̂ = (1/N) Σ_i q_i from per-image probabilities (N, K).

    soft (default): q_i = the classifier's probabilities ("logits mean" in DiffLens / SelfDebias code);
    hard: q_i = one-hot of argmax, i.e. p̂_c = n_c / N (Choi et al. 2020; Teo et al. 2023).
    """
    p = check_probs(probs)
    if hard:
        return np.bincount(p.argmax(axis=1), minlength=p.shape[1]) / p.shape[0]
    return p.mean(axis=0)


def fairness_discrepancy(dist: np.ndarray, target: np.ndarray | None = None) -> float | np.ndarray:
    """Fairness Discrepancy FD = ‖p̂ − π‖₂ (Choi et al., "Fair Generative Modeling via Weak Supervision", ICML 2020).

    With π uniform and K = 2: FD = √2 · |p̂_1 − 0.5|. Hard or soft depends on how p̂ was formed.
    """
    d = check_distribution(dist)
    t = target_or_uniform(target, d.shape[-1])
    return scalar_or_array(np.sqrt(((d - t) ** 2).sum(axis=-1)))


def statistical_parity_difference(values: np.ndarray) -> float | np.ndarray:
    """SPD = max_a v_a − min_b v_b over the last axis.

    Proportion-gap form: v = p̂, the gap between the most and least generated class (generator papers'
    reading of SPD; e.g. DDM, Huang et al. 2025, exact form unverified).
    Group-conditioned form: v_g = the rate at which prompts naming group g produce g (see
    ``named_class_rate``); this is demographic parity difference max_g P(Ŷ=1|A=g) − min_g P(Ŷ=1|A=g)
    with A = named group and Ŷ = "image shows the named class" (fairlearn's demographic_parity_difference).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0 or v.shape[-1] == 0:
        raise DataError(f"spd: need at least one value on the last axis, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise DataError("spd: values contain NaN or Inf")
    return scalar_or_array(v.max(axis=-1) - v.min(axis=-1))


def named_class_hits(probs: np.ndarray, named_index: int, hard: bool = True) -> np.ndarray:
    """Per-image indicator (hard: argmax == named class) or probability (soft) of showing the named class."""
    p = check_probs(probs)
    if not 0 <= named_index < p.shape[1]:
        raise DataError(f"named class index {named_index} out of range for {p.shape[1]} classes")
    if hard:
        return (p.argmax(axis=1) == named_index).astype(np.float64)
    return p[:, named_index]


def named_class_rate(probs: np.ndarray, named_index: int, hard: bool = True) -> float:
    """Rate of images that show the class named in their prompt: mean of ``named_class_hits``."""
    return float(named_class_hits(probs, named_index, hard).mean())


def normalized_entropy(dist: np.ndarray) -> float | np.ndarray:
    """H_norm(p̂) = −Σ_c p̂_c log p̂_c / log K ∈ [0, 1]; 1 is uniform (0 log 0 := 0)."""
    d = check_distribution(dist)
    k = d.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    return scalar_or_array(-terms.sum(axis=-1) / np.log(k))


def kl_divergence(dist: np.ndarray, target: np.ndarray | None = None) -> float | np.ndarray:
    """KL(p̂ ‖ π) = Σ_c p̂_c log(p̂_c / π_c) in nats (0 log 0 := 0).

    Infinite when p̂ puts mass on a class with π_c = 0; such a target is rejected.
    """
    d = check_distribution(dist)
    t = target_or_uniform(target, d.shape[-1])
    if (t <= 0).any():
        raise DataError("kl: target has a zero entry, KL(p̂ ‖ π) would be infinite")
    safe = np.where(d > 0, d, 1.0)
    return scalar_or_array(np.where(d > 0, d * np.log(safe / t), 0.0).sum(axis=-1))


def deviation_ratio(dist: np.ndarray, target: np.ndarray | None = None) -> float | np.ndarray:
    """SelfDebias deviation ratio Δ = (1/K) Σ_c |p̂_c − π_c| / π_c, with p̂ from hard counts.

    With π uniform this is the released code's Δ = (1/K) Σ_c |p̂_c − 1/K| / (1/K) (Vardhana et al.,
    "Fully Unsupervised Self-debiasing of Text-to-Image Diffusion Models", WACV 2026). 0 when p̂ = π.
    """
    d = check_distribution(dist)
    k = d.shape[-1]
    t = target_or_uniform(target, k)
    if (t <= 0).any():
        raise DataError("deviation_ratio: target has a zero entry")
    return scalar_or_array((np.abs(d - t) / t).sum(axis=-1) / k)


def invdiff_bias(dist: np.ndarray) -> float | np.ndarray:
    """InvDiff "Bias" of one prompt: [Σ_{c<c'} |n_c − n_c'| / n] / (K(K−1)/2), with n_c hard counts.

    Written with p̂_c = n_c / n as the mean of |p̂_c − p̂_c'| over the K(K−1)/2 class pairs (Hou et al.,
    "InvDiff: Invariant Guidance for Bias Mitigation in Diffusion Models", KDD 2025, released code).
    0 when balanced; 1 when every image falls in one class and K = 2.
    """
    d = check_distribution(dist)
    k = d.shape[-1]
    i, j = np.triu_indices(k, 1)
    return scalar_or_array(np.abs(d[..., i] - d[..., j]).sum(axis=-1) / (k * (k - 1) / 2))


def invdiff_bias_summary(dists: np.ndarray) -> tuple[float, float]:
    """InvDiff's set-level report: (mean, std) of per-prompt Bias over prompts; ``dists`` is (P, K) hard p̂."""
    per_prompt = np.atleast_1d(invdiff_bias(np.atleast_2d(dists)))
    return float(per_prompt.mean()), float(per_prompt.std())


def joint_classes(classes_a: list[str], classes_b: list[str]) -> list[str]:
    """Names of the joint classes "a×b", in the order of ``joint_probs`` columns (a major, b minor)."""
    return [f"{a}{JOINT_SEP}{b}" for a in classes_a for b in classes_b]


def joint_probs(probs_a: np.ndarray, probs_b: np.ndarray) -> np.ndarray:
    """Joint per-image probabilities (N, Ka·Kb) as the outer product q_a ⊗ q_b (classifier heads independent)."""
    a, b = check_probs(probs_a, "probs_a"), check_probs(probs_b, "probs_b")
    if a.shape[0] != b.shape[0]:
        raise DataError(f"joint: probs_a has {a.shape[0]} images, probs_b has {b.shape[0]}")
    return np.einsum("ni,nj->nij", a, b).reshape(a.shape[0], -1)


def joint_labels(probs_a: np.ndarray, probs_b: np.ndarray) -> np.ndarray:
    """Hard joint class per image from both argmaxes: index = argmax_a · Kb + argmax_b."""
    a, b = check_probs(probs_a, "probs_a"), check_probs(probs_b, "probs_b")
    if a.shape[0] != b.shape[0]:
        raise DataError(f"joint: probs_a has {a.shape[0]} images, probs_b has {b.shape[0]}")
    return a.argmax(axis=1) * b.shape[1] + b.argmax(axis=1)


def joint_target(target_a: np.ndarray | None, target_b: np.ndarray | None, ka: int, kb: int) -> np.ndarray:
    """Joint target π_a ⊗ π_b (attributes balanced independently; uniform over Ka·Kb by default)."""
    return np.outer(target_or_uniform(target_a, ka, "target_a"), target_or_uniform(target_b, kb, "target_b")).ravel()


class FairnessMetric:
    """Streaming class distribution and its fairness metrics (torchmetrics style): ``update(probs)`` per
    batch of (N, K) probabilities, then ``compute()`` for the whole stream, ``reset()`` to start over."""

    def __init__(self, k: int, target: np.ndarray | None = None) -> None:
        self.k = k
        self.target = target_or_uniform(target, k)
        self.reset()

    def reset(self) -> None:
        self.soft_sum = np.zeros(self.k)
        self.hard_counts = np.zeros(self.k, dtype=np.int64)
        self.n = 0

    def update(self, probs: np.ndarray) -> None:
        p = check_probs(probs, k=self.k)
        self.soft_sum += p.sum(axis=0)
        self.hard_counts += np.bincount(p.argmax(axis=1), minlength=self.k)
        self.n += p.shape[0]

    def compute(self) -> dict[str, float]:
        """Keys "metric/variant": fd/soft, fd/hard, spd/proportion-gap (hard), entropy/{soft,hard},
        kl/{soft,hard} (only when π > 0), deviation_ratio/hard, invdiff_bias/hard."""
        if self.n == 0:
            raise DataError("FairnessMetric.compute: no images were added with update()")
        soft, hard = self.soft_sum / self.n, self.hard_counts / self.n
        out = {
            "fd/soft": fairness_discrepancy(soft, self.target),
            "fd/hard": fairness_discrepancy(hard, self.target),
            "spd/proportion-gap": statistical_parity_difference(hard),
            "entropy/soft": normalized_entropy(soft),
            "entropy/hard": normalized_entropy(hard),
            "invdiff_bias/hard": invdiff_bias(hard),
        }
        if (self.target > 0).all():
            out["kl/soft"] = kl_divergence(soft, self.target)
            out["kl/hard"] = kl_divergence(hard, self.target)
            out["deviation_ratio/hard"] = deviation_ratio(hard, self.target)
        return out
