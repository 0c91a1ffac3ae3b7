"""Classifier-error-corrected class distribution (CLEAM-style).

Teo, Abdollahzadeh, Cheung, "On Measuring Fairness in Generative Models", NeurIPS 2023 (CLEAM).
An attribute classifier with confusion matrix C[i, j] = P(pred j | true i) turns the true class
distribution p of the generated images into the expected observed distribution

    E[p̂] = Cᵀ p.

CLEAM's point estimate inverts this relation (for K = 2 in closed form). Here it is solved for any K as
the least-squares problem on the probability simplex

    p* = argmin_{p ≥ 0, Σp = 1} ‖Cᵀ p − p̂‖₂,

which equals the exact inverse C⁻ᵀ p̂ whenever that lies on the simplex (C⁻ᵀ p̂ always sums to 1 because
C's rows do). Instead of CLEAM's Gaussian interval, the benchmark puts bootstrap intervals on p*
(``benchmark.metrics.report``).

The confusion matrix must match the variant: for hard p̂ it is the argmax confusion measured on labelled
images; for soft p̂ it is C[i, j] = E[q_j | true i] (``confusion_matrix(..., hard=False)``).

**The matrix's own sampling error.** C is itself an estimate, from n_i labelled images of each true
class i, and an interval that takes it as exact is too narrow when n_i is small. Where the counts n_i
are known, each bootstrap resample gets its own matrix drawn from C's sampling distribution
(:func:`sample_confusions`, a parametric bootstrap of the calibration set) and is corrected with it
(:func:`corrected_distributions`, exact and batched); ``benchmark.metrics.report`` builds the interval
from those draws.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

from benchmark.errors import DataError
from benchmark.metrics._checks import check_confusion, check_counts, check_distribution, check_probs
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
    ``ct`` is one Cᵀ (K, K) for every row, or each row's own (R, K, K).
    """
    k = ct.shape[-1]
    each = ct.ndim == 3
    if each:
        g_mat, h = np.einsum("rji,rjl->ril", ct, ct), np.einsum("rji,rj->ri", ct, rows)
        tol = 1e-10 * np.maximum(1.0, np.abs(g_mat).max(axis=(1, 2)))
    else:
        g_mat, h = ct.T @ ct, np.einsum("rj,ji->ri", rows, ct)
        tol = 1e-10 * max(1.0, float(np.abs(g_mat).max()))
    out = np.zeros_like(rows)
    solved = np.zeros(len(rows), dtype=bool)
    given_up = np.zeros(len(rows), dtype=bool)
    support = support.copy()
    for _ in range(2 * k + 2):
        pending = np.flatnonzero(~solved & ~given_up)
        if len(pending) == 0:
            break
        if k <= 62:  # one integer per support pattern (bit i: class i in S): a 1-D unique, far cheaper
            codes, inverse = np.unique(support[pending] @ (np.int64(1) << np.arange(k, dtype=np.int64)),
                                       return_inverse=True)
            patterns = (codes[:, None] >> np.arange(k, dtype=np.int64)) & 1 == 1
        else:
            patterns, inverse = np.unique(support[pending], axis=0, return_inverse=True)
        for pat_id, pattern in enumerate(patterns):
            r = pending[inverse.ravel() == pat_id]
            s = np.flatnonzero(pattern)
            if len(s) == 0:
                support[r] = True
                continue
            m = len(s)
            rhs = np.concatenate([h[np.ix_(r, s)], np.ones((len(r), 1))], axis=1)
            if each:
                kkt = np.zeros((len(r), m + 1, m + 1))
                kkt[:, :m, :m], kkt[:, :m, m], kkt[:, m, :m] = g_mat[np.ix_(r, s, s)], 1.0, 1.0
                sol = _solve_each(kkt, rhs)  # NaN where singular on this support: left to the enumeration
            else:
                kkt = np.zeros((m + 1, m + 1))
                kkt[:m, :m], kkt[:m, m], kkt[m, :m] = g_mat[np.ix_(s, s)], 1.0, 1.0
                try:
                    sol = np.linalg.solve(kkt, rhs.T).T
                except np.linalg.LinAlgError:
                    given_up[r] = True  # singular on this support: left to the reference solver
                    continue
            x = np.zeros((len(r), k))
            x[:, s] = sol[:, :m]
            mu = sol[:, m]
            if each:
                grad = np.einsum("rj,rji->ri", x, g_mat[r]) - h[r]
            else:
                grad = np.einsum("rj,ji->ri", x, g_mat) - h[r]
            row_tol = tol[r][:, None] if each else tol
            off = ~pattern
            neg = x[:, s] < -row_tol
            viol = (grad[:, off] + mu[:, None]) < -row_tol
            finite = np.isfinite(sol).all(axis=1)
            ok = ~neg.any(axis=1) & ~viol.any(axis=1) & finite
            out[r[ok]] = np.clip(x[ok], 0.0, None)
            solved[r[ok]] = True
            given_up[r[~finite]] = True  # no step from a singular system: the caller's fallback solves it
            bad = r[~ok & finite]
            new = support[bad].copy()
            # Drop negative coordinates first; only when none is negative, add the worst violator.
            step = ~ok & finite
            has_neg = neg[step].any(axis=1)
            sub = new[:, s]
            sub[has_neg] &= ~neg[step][has_neg]
            new[:, s] = sub
            add = ~has_neg
            if add.any():
                worst = np.argmin(np.where(off, grad[step] + mu[step][:, None], np.inf), axis=1)
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


# Largest K whose resamples are each corrected with their own drawn matrix: an off-simplex row is solved
# on all 2^K − 1 faces. Beyond it the interval keeps the measured matrix fixed (``report``).
MAX_PROPAGATED_K = 8


def sample_confusions(confusion: np.ndarray, counts: np.ndarray, hard: bool, size: int,
                      rng: np.random.Generator) -> np.ndarray:
    """``size`` draws (size, K, K) of a confusion matrix from its sampling distribution, given the
    ``counts`` n_i of labelled images of each true class i that row i was measured on.

    * hard (argmax confusion): row i ~ Multinomial(n_i, C_i) / n_i. This is exact: row i is the share
      of n_i independent images of class i that land in each class (parametric bootstrap at Ĉ).
    * soft (C_i = mean of n_i probability vectors q): row i ~ Dirichlet(n_i · C_i). Its mean is C_i and
      its covariance (diag(C_i) − C_i C_iᵀ)/(n_i + 1), while the true one is Cov(q | i)/n_i, which
      never exceeds (diag(C_i) − C_i C_iᵀ)/n_i for vectors on the simplex (E[q_j²] ≤ E[q_j]): the
      draws keep every row on the simplex and are, up to the factor n_i/(n_i + 1), the widest the soft
      matrix's error can be. The per-image spread of q that would make them exact is not stored, so
      this errs on the wide side (equal for a classifier whose outputs are one-hot).

    Entries that are 0 in C stay 0 in every draw. A row with n_i → ∞ is drawn as C_i.
    """
    k = len(counts)
    c = check_confusion(confusion, k)
    n = check_counts(counts, k)
    if hard:
        # Multinomial rows need Σ p ≤ 1 exactly; the checked rows sum to 1 up to rounding.
        pvals = np.clip(c, 0.0, None)
        pvals /= pvals.sum(axis=1, keepdims=True)
        return rng.multinomial(n, pvals, size=(size, k)) / n[:, None]
    g = rng.standard_gamma(np.broadcast_to(n[:, None] * c, (size, k, k)))
    return g / g.sum(axis=2, keepdims=True)


def _solve_each(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched solve of a[r] x = b[r]; rows whose system is singular give NaN."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.full(b.shape, np.nan)
        for r in range(len(a)):
            try:
                out[r] = np.linalg.solve(a[r], b[r])
            except np.linalg.LinAlgError:
                pass
        return out


def unconstrained_inverses(dists: np.ndarray, confusions: np.ndarray) -> np.ndarray:
    """C_r⁻ᵀ b_r for each row (R, K) and its own matrix (R, K, K), without the simplex constraint; NaN for a
    row whose matrix is (nearly) singular (1-norm condition number 1e10 or more)."""
    ct = np.asarray(confusions, dtype=np.float64).transpose(0, 2, 1)
    try:
        inv = np.linalg.inv(ct)
    except np.linalg.LinAlgError:
        inv = np.full(ct.shape, np.nan)
        for r in range(len(ct)):
            try:
                inv[r] = np.linalg.inv(ct[r])
            except np.linalg.LinAlgError:
                pass
    cond = np.abs(ct).sum(axis=1).max(axis=1) * np.abs(inv).sum(axis=1).max(axis=1)
    out = np.einsum("rij,rj->ri", inv, dists)
    out[~(cond < _MAX_COND)] = np.nan
    return out


def _faces(ct: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact min ‖C_rᵀ p − b_r‖₂ over the simplex for each row r (ct = C_rᵀ stacked), by enumeration.

    For every support S (2^K − 1 faces) the equality-constrained least squares on the face's affine
    hull is the KKT system [[G_SS, 1], [1ᵀ, 0]] [x_S; μ] = [h_S; 1] (G = C Cᵀ, h = C b), solved for all
    rows (and all supports of one size) at once. A solution with x_S ≥ 0 is a feasible point; the
    optimum p* is the solution on its own support (p* is interior to that face, so it minimises the
    convex objective on the face's affine hull). Hence the feasible candidate of least residual is
    optimal: exact for this convex problem, with no iteration. Single vertices are always feasible, so
    every row gets an answer."""
    from itertools import combinations

    r_count, k = b.shape
    g = np.einsum("rji,rjl->ril", ct, ct)  # C Cᵀ per row (einsum: tiny products, no BLAS threads)
    h = np.einsum("rji,rj->ri", ct, b)
    best = np.full((r_count, k), np.nan)
    best_res = np.full(r_count, np.inf)
    for m in range(1, k + 1):
        supports = np.array(list(combinations(range(k), m)))  # (F, m)
        f = len(supports)
        if m == 1:
            x = np.broadcast_to(np.eye(k)[None], (r_count, k, k)).copy()  # vertices: always feasible
            feasible = np.ones((r_count, k), dtype=bool)
        else:
            kkt = np.zeros((r_count, f, m + 1, m + 1))
            kkt[:, :, :m, :m] = g[:, supports[:, :, None], supports[:, None, :]]
            kkt[:, :, :m, m] = kkt[:, :, m, :m] = 1.0
            rhs = np.concatenate([h[:, supports], np.ones((r_count, f, 1))], axis=2)
            sol = _solve_each(kkt.reshape(-1, m + 1, m + 1), rhs.reshape(-1, m + 1)).reshape(r_count, f, m + 1)
            x = np.zeros((r_count, f, k))
            np.put_along_axis(x, np.broadcast_to(supports[None], (r_count, f, m)), sol[:, :, :m], axis=2)
            tol = 1e-10 * np.maximum(1.0, np.abs(np.nan_to_num(sol[:, :, :m])).max(axis=2))
            feasible = np.isfinite(sol).all(axis=2) & (sol[:, :, :m] >= -tol[:, :, None]).all(axis=2)
            x = np.clip(np.nan_to_num(x), 0.0, None)
            total = x.sum(axis=2, keepdims=True)
            feasible &= total[:, :, 0] > 0
            x = np.divide(x, total, out=np.zeros_like(x), where=total > 0)
        res = ((np.einsum("rij,rfj->rfi", ct, x) - b[:, None, :]) ** 2).sum(axis=2)
        res = np.where(feasible, res, np.inf)
        pick = res.argmin(axis=1)
        cand = res[np.arange(r_count), pick]
        better = cand < best_res
        best[better], best_res[better] = x[np.flatnonzero(better), pick[better]], cand[better]
    return best


def corrected_distributions(dists: np.ndarray, confusions: np.ndarray, inverses: np.ndarray | None = None) -> np.ndarray:
    """:func:`corrected_distribution` of each row of ``dists`` (R, K) with its own matrix
    ``confusions[r]`` (R, K, K): the bootstrap resamples of the propagated CLEAM interval, each with the
    matrix drawn for it (:func:`sample_confusions`).

    Rows whose exact inverse C_r⁻ᵀ b_r lies on the simplex take it (batched; ``inverses``: those of
    :func:`unconstrained_inverses` when already computed); the others by the active-set method, each
    with its own matrix (optimal within its KKT tolerance), and any it leaves unsolved exactly on the
    simplex's faces (:func:`_faces`).
    For K up to :data:`MAX_PROPAGATED_K`."""
    d = check_distribution(dists, "dists")
    c = np.asarray(confusions, dtype=np.float64)
    if d.ndim != 2 or c.shape != (*d.shape, d.shape[1]):
        raise DataError(f"corrected_distributions: expected (R, K) shares and (R, K, K) matrices, got {d.shape} "
                        f"and {c.shape}")
    k = d.shape[1]
    if k > MAX_PROPAGATED_K:
        raise DataError(f"corrected_distributions: K = {k} classes, more than {MAX_PROPAGATED_K} (2^K faces)")
    if not np.isfinite(c).all():
        raise DataError("corrected_distributions: matrices contain NaN or Inf")
    exact = unconstrained_inverses(d, c) if inverses is None else np.asarray(inverses, dtype=np.float64)
    out = np.full(d.shape, np.nan)
    ok = np.isfinite(exact).all(axis=1) & (exact >= 0).all(axis=1)
    out[ok] = exact[ok] / exact[ok].sum(axis=1, keepdims=True)
    todo = np.flatnonzero(~ok)
    if len(todo):
        # the active set from the inverse's positive entries; the faces' enumeration for what it leaves
        ct = c[todo].transpose(0, 2, 1)
        support = np.where(np.isfinite(exact[todo]), exact[todo] > 0, True)
        solved_rows, solved = _active_set(ct, d[todo], support)
        out[todo[solved]] = solved_rows[solved]
        if not solved.all():
            out[todo[~solved]] = _faces(ct[~solved], d[todo[~solved]])
    return out


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


def counts_by_prompt(texts: Mapping[str, str], pooled: np.ndarray | None, by_content: Mapping[str, np.ndarray] | None,
                     matrices_by_content: Mapping[str, np.ndarray] | None
                     ) -> dict[str, np.ndarray | None] | np.ndarray | None:
    """The labelled images per true class behind the matrix :func:`matrices_by_prompt` picks for each
    prompt id (given the same ``matrices_by_content``): its content's counts where its content's matrix is
    used, else ``pooled``; None for a prompt whose matrix has no counts."""
    if not matrices_by_content:
        return pooled
    out: dict[str, np.ndarray | None] = {}
    for pid, text in texts.items():
        content = content_of(text, matrices_by_content)
        chosen = (by_content or {}).get(content) if content is not None else pooled
        out[pid] = None if chosen is None else np.asarray(chosen)
    return out


def observed_shares(probs: np.ndarray, hard: bool = True) -> np.ndarray:
    """The class shares a classifier reports for (N, K) per-image probabilities: argmax counts over N
    (hard) or the mean probabilities (soft)."""
    p = check_probs(probs)
    return np.bincount(p.argmax(axis=1), minlength=p.shape[1]) / p.shape[0] if hard else p.mean(axis=0)


def cleam_fd(
    probs: np.ndarray, confusion: np.ndarray, target: np.ndarray | None = None, hard: bool = True
) -> tuple[float, float]:
    """(raw FD, corrected FD) for one set of per-image probabilities; FD = ‖p − π‖₂ (Choi et al. 2020)."""
    raw = observed_shares(probs, hard)
    return fairness_discrepancy(raw, target), fairness_discrepancy(corrected_distribution(raw, confusion), target)
