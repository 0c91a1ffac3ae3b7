"""Classifier-error-corrected class distribution (CLEAM-style).

Teo, Abdollahzadeh, Cheung, "On Measuring Fairness in Generative Models", NeurIPS 2023 (CLEAM).
An attribute classifier with confusion matrix C[i, j] = P(pred j | true i) turns the true class
distribution p of the generated images into the expected observed distribution

    E[p̂] = Cᵀ p.

CLEAM's point estimate inverts this relation (for K = 2 in closed form). Here it is solved for any K as
the least-squares problem on the probability simplex

    p* = argmin_{p ≥ 0, Σp = 1} ‖Cᵀ p − p̂‖₂,

which equals the exact inverse C⁻ᵀ p̂ whenever that lies on the simplex (C⁻ᵀ p̂ always sums to 1 because
C's rows do). Instead of CLEAM's Gaussian interval, the benchmark puts bootstrap intervals on p*.

The confusion matrix must match the variant: for hard p̂ it is the argmax confusion measured on labelled
images; for soft p̂ it is C[i, j] = E[q_j | true i] (``confusion_matrix(..., hard=False)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

from benchmark.errors import DataError
from benchmark.metrics._checks import check_confusion, check_distribution, check_probs
from benchmark.metrics.fairness import fairness_discrepancy

# Weight of the Σp = 1 row appended to the NNLS system; large enough to enforce it to ~1e-9 relative.
_SUM_WEIGHT = 1e4
# Beyond this condition number C⁻ᵀ p̂ is numerically meaningless and every row goes through NNLS.
_MAX_COND = 1e10


def confusion_matrix(true_labels: np.ndarray, probs: np.ndarray, hard: bool = True) -> np.ndarray:
    """Estimate C[i, j] = P(pred j | true i) (hard) or E[q_j | true i] (soft) from labelled images.

    ``true_labels`` (N,) integer classes, ``probs`` (N, K) classifier outputs. Every class needs at
    least one labelled image.
    """
    p = check_probs(probs, "probs")
    y = np.asarray(true_labels)
    if y.shape != (p.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"true_labels: expected {p.shape[0]} integer labels, got shape {y.shape} dtype {y.dtype}")
    k = p.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise DataError(f"true_labels: labels must lie in [0, {k}), got range [{y.min()}, {y.max()}]")
    q = np.eye(k)[p.argmax(axis=1)] if hard else p
    counts = np.bincount(y, minlength=k)
    if (counts == 0).any():
        raise DataError(f"true_labels: no labelled image for class(es) {np.flatnonzero(counts == 0).tolist()}")
    sums = np.zeros((k, k))
    np.add.at(sums, y, q)
    return sums / counts[:, None]


def _nnls_simplex(ct: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference solver for one row: NNLS with a heavily weighted Σp = 1 row."""
    from scipy.optimize import nnls  # scipy.optimize costs ~1 s to import; only degenerate cases need it

    k = ct.shape[1]
    a = np.vstack([ct, np.full((1, k), _SUM_WEIGHT)])
    x, _ = nnls(a, np.append(b, _SUM_WEIGHT))
    s = x.sum()
    return x / s if s > 0 else np.full(k, 1.0 / k)


def _active_set(ct: np.ndarray, rows: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised active-set solve of min ‖Cᵀp − b‖ on the simplex, rows grouped by support pattern.

    On a support S the equality-constrained problem is the KKT system [[G_SS, 1], [1ᵀ, 0]] [x; μ] =
    [h_S; 1] with G = C Cᵀ, h = C b. A row is optimal when x ≥ 0 on S and g_i + μ ≥ 0 off S, with
    g = G x − h (the problem is convex, so these conditions certify the solution). Rows that are not
    optimal drop negative entries from S or add violating ones, and try again. Returns (p, solved mask).
    """
    k = ct.shape[1]
    g_mat, h = ct.T @ ct, np.einsum("rj,ji->ri", rows, ct)
    tol = 1e-10 * max(1.0, float(np.abs(g_mat).max()))
    out = np.zeros_like(rows)
    solved = np.zeros(len(rows), dtype=bool)
    support = support.copy()
    for _ in range(2 * k + 2):
        pending = np.flatnonzero(~solved)
        if len(pending) == 0:
            break
        patterns, inverse = np.unique(support[pending], axis=0, return_inverse=True)
        for pat_id, pattern in enumerate(patterns):
            r = pending[inverse.ravel() == pat_id]
            s = np.flatnonzero(pattern)
            if len(s) == 0:
                support[r] = True
                continue
            m = len(s)
            kkt = np.zeros((m + 1, m + 1))
            kkt[:m, :m], kkt[:m, m], kkt[m, :m] = g_mat[np.ix_(s, s)], 1.0, 1.0
            rhs = np.concatenate([h[np.ix_(r, s)], np.ones((len(r), 1))], axis=1)
            try:
                sol = np.linalg.solve(kkt, rhs.T).T
            except np.linalg.LinAlgError:
                continue  # singular on this support: left to the reference solver
            x = np.zeros((len(r), k))
            x[:, s] = sol[:, :m]
            mu = sol[:, m]
            grad = np.einsum("rj,ji->ri", x, g_mat) - h[r]
            off = ~pattern
            neg = x[:, s] < -tol
            viol = (grad[:, off] + mu[:, None]) < -tol
            ok = ~neg.any(axis=1) & ~viol.any(axis=1)
            out[r[ok]] = np.clip(x[ok], 0.0, None)
            solved[r[ok]] = True
            bad = r[~ok]
            new = support[bad].copy()
            # Drop negative coordinates first; only when none is negative, add the worst violator.
            has_neg = neg[~ok].any(axis=1)
            sub = new[:, s]
            sub[has_neg] &= ~neg[~ok][has_neg]
            new[:, s] = sub
            add = ~has_neg
            if add.any():
                worst = np.argmin(np.where(off, grad[~ok] + mu[~ok][:, None], np.inf), axis=1)
                new[np.flatnonzero(add), worst[add]] = True
            support[bad] = new
    out[solved] /= out[solved].sum(axis=1, keepdims=True)
    return out, solved


def corrected_distribution(dist: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """CLEAM-style estimate of the true distribution p* from the observed p̂ (see module docstring).

    ``dist`` is (K,) or a (..., K) stack (bootstrap resamples); rows are solved independently.
    """
    d = check_distribution(dist, "dist")
    k = d.shape[-1]
    c = check_confusion(confusion, k)
    flat = d.reshape(-1, k)
    ct = c.T
    out = np.empty_like(flat)
    support = np.ones_like(flat, dtype=bool)
    todo = np.ones(len(flat), dtype=bool)
    if np.linalg.cond(ct) < _MAX_COND:
        # einsum rather than BLAS: tiny products, and BLAS threads stall on a busy machine.
        exact = np.einsum("ij,rj->ri", np.linalg.inv(ct), flat)
        ok = (exact >= 0).all(axis=1)
        out[ok] = exact[ok] / exact[ok].sum(axis=1, keepdims=True)
        todo = ~ok
        support = exact > 0
    rows = np.flatnonzero(todo)
    if len(rows):
        solved_rows, solved = _active_set(ct, flat[rows], support[rows])
        out[rows[solved]] = solved_rows[solved]
        for r in rows[~solved]:
            out[r] = _nnls_simplex(ct, flat[r])
    return out.reshape(d.shape)


def content_of(text: str, contents: Iterable[str]) -> str | None:
    """The one content class whose name is a word of ``text`` (None for none or several): the
    content-specific confusion matrix applies to a prompt that names exactly one.

    >>> content_of("a photo of a blue zero", ["zero", "one"])
    'zero'
    >>> content_of("a photo of a one or a zero", ["zero", "one"]) is None
    True
    """
    words = set(re.findall(r"[a-z0-9]+", text.lower()))
    found = [c for c in contents if c.lower() in words]
    return found[0] if len(found) == 1 else None


def matrices_by_prompt(texts: Mapping[str, str], pooled: np.ndarray | None,
                       by_content: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray] | np.ndarray | None:
    """The confusion matrix for each prompt id: its content's where one was measured
    (:func:`content_of`), else ``pooled``; just ``pooled`` when nothing was measured per content."""
    if not by_content:
        return pooled
    out = {}
    for pid, text in texts.items():
        chosen = by_content.get(content_of(text, by_content) or "", pooled)
        if chosen is None:
            return pooled
        out[pid] = np.asarray(chosen, dtype=np.float64)
    return out


def cleam_fd(
    probs: np.ndarray, confusion: np.ndarray, target: np.ndarray | None = None, hard: bool = True
) -> tuple[float, float]:
    """(raw FD, corrected FD) for one set of per-image probabilities; FD = ‖p − π‖₂ (Choi et al. 2020)."""
    p = check_probs(probs)
    k = p.shape[1]
    raw = np.bincount(p.argmax(axis=1), minlength=k) / p.shape[0] if hard else p.mean(axis=0)
    return fairness_discrepancy(raw, target), fairness_discrepancy(corrected_distribution(raw, confusion), target)
