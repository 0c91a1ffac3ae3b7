"""CLEAM-style correction: exact inversion, simplex boundary, and recovery from a simulated noisy classifier."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.errors import DataError
from benchmark.metrics import cleam_fd, confusion_matrix, corrected_distribution, fairness_discrepancy

C3 = np.array(
    [
        [0.85, 0.10, 0.05],
        [0.15, 0.75, 0.10],
        [0.05, 0.20, 0.75],
    ]
)


def _simulate(p_true: np.ndarray, confusion: np.ndarray, n: int, rng: np.random.Generator):
    """True labels from p_true, predicted labels through the confusion rows; returns (true, one-hot preds)."""
    k = len(p_true)
    y = rng.choice(k, size=n, p=p_true)
    cum = confusion.cumsum(axis=1)[y]
    pred = (rng.random(n)[:, None] > cum).sum(axis=1)
    return y, np.eye(k)[np.minimum(pred, k - 1)]


def test_exact_inverse_recovers_truth():
    p = np.array([0.6, 0.3, 0.1])
    observed = C3.T @ p
    np.testing.assert_allclose(corrected_distribution(observed, C3), p, atol=1e-12)


def test_binary_closed_form():
    # CLEAM's K = 2 point estimate: p0 = (p̂0 − (1 − α1)) / (α0 + α1 − 1), α_i = C[i, i].
    a0, a1 = 0.9, 0.8
    c = np.array([[a0, 1 - a0], [1 - a1, a1]])
    p_hat0 = 0.62
    expected = (p_hat0 - (1 - a1)) / (a0 + a1 - 1)
    np.testing.assert_allclose(corrected_distribution([p_hat0, 1 - p_hat0], c), [expected, 1 - expected])


def test_outside_the_image_projects_onto_simplex():
    # With C = [[.9,.1],[.2,.8]], Cᵀp can only reach p̂0 ∈ [0.2, 0.9]; p̂0 = 0.97 lies outside.
    c = np.array([[0.9, 0.1], [0.2, 0.8]])
    out = corrected_distribution([0.97, 0.03], c)
    assert out.min() >= 0 and out.sum() == pytest.approx(1.0)
    grid = np.linspace(0, 1, 1001)
    resid = np.linalg.norm(np.stack([grid, 1 - grid], 1) @ c - [0.97, 0.03], axis=1)
    best = grid[int(np.argmin(resid))]
    assert out[0] == pytest.approx(best, abs=1e-3)
    assert out[0] == pytest.approx(1.0, abs=1e-6)


def test_batched_rows_match_single_rows():
    rng = np.random.default_rng(1)
    d = rng.dirichlet([1, 1, 1], size=20)  # some rows fall outside C3's image and need NNLS
    batch = corrected_distribution(d, C3)
    for row, out in zip(d, batch, strict=True):
        np.testing.assert_allclose(corrected_distribution(row, C3), out, atol=1e-12)
    assert (batch >= 0).all()
    np.testing.assert_allclose(batch.sum(axis=1), 1.0)


def test_singular_confusion_still_returns_a_distribution():
    c = np.array([[0.5, 0.5], [0.5, 0.5]])  # a coin-flip classifier carries no information
    out = corrected_distribution([0.5, 0.5], c)
    assert out.min() >= 0 and out.sum() == pytest.approx(1.0)


def test_correction_beats_raw_estimate_on_simulated_classifier():
    rng = np.random.default_rng(7)
    p_true = np.array([0.7, 0.2, 0.1])
    # Confusion measured on a labelled set, as a classifier wrapper would, then applied to generated images.
    y_lab, pred_lab = _simulate(np.full(3, 1 / 3), C3, 30000, rng)
    c_hat = confusion_matrix(y_lab, pred_lab)
    np.testing.assert_allclose(c_hat, C3, atol=0.02)
    raw_err, cor_err = [], []
    for _ in range(20):
        _, pred = _simulate(p_true, C3, 2000, rng)
        raw = pred.mean(axis=0)
        raw_err.append(np.abs(raw - p_true).sum())
        cor_err.append(np.abs(corrected_distribution(raw, c_hat) - p_true).sum())
    assert np.mean(cor_err) < 0.5 * np.mean(raw_err)
    assert np.mean(cor_err) < 0.05
    raw_fd, cor_fd = cleam_fd(pred, c_hat)
    true_fd = fairness_discrepancy(p_true)
    assert abs(cor_fd - true_fd) < abs(raw_fd - true_fd)


def test_confusion_matrix_hand_and_soft():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    np.testing.assert_allclose(confusion_matrix(y, probs), [[0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(confusion_matrix(y, probs, hard=False), [[0.65, 0.35], [0.25, 0.75]])
    with pytest.raises(DataError, match="no labelled image"):
        confusion_matrix(np.array([0, 0]), probs[:2])


def test_bad_confusion_rejected():
    with pytest.raises(DataError, match="shape"):
        corrected_distribution([0.5, 0.5], C3)
    with pytest.raises(DataError, match="sum to 1"):
        corrected_distribution([0.5, 0.5], np.array([[0.5, 0.2], [0.1, 0.9]]))


@pytest.mark.parametrize("k", [3, 5])
def test_vectorised_solver_matches_scipy_nnls(k):
    from scipy.optimize import nnls

    rng = np.random.default_rng(k)
    c = rng.dirichlet(np.ones(k), size=k) + 2 * np.eye(k)
    c /= c.sum(axis=1, keepdims=True)
    d = rng.dirichlet(np.full(k, 0.3), size=300)  # sparse p̂: most rows need the constrained solve
    ours = corrected_distribution(d, c)
    # Reference: NNLS on [Cᵀ; w·1ᵀ] p ≈ [p̂; w] with a large w enforcing Σp = 1.
    w = 1e4
    a = np.vstack([c.T, np.full((1, k), w)])
    ref = np.array([nnls(a, np.append(row, w))[0] for row in d])
    ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ours, ref, atol=1e-7)
