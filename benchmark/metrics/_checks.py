"""Input checks shared by the metric modules: bad arrays fail with one line naming the argument."""

from __future__ import annotations

import numpy as np

from benchmark.errors import DataError

# Classifier outputs are often float16/float32 softmax; rows then sum to 1 only up to rounding.
ROW_SUM_TOL = 1e-3


def check_probs(probs: np.ndarray, name: str = "probs", k: int | None = None) -> np.ndarray:
    """Validate per-image class probabilities (N, K) and return them as float64 with rows summing to 1.

    Raises DataError (one line, naming ``name``) for a wrong shape, no rows, NaN/Inf, negative entries,
    or rows that do not sum to 1 (logits passed instead of probabilities).
    """
    arr = np.asarray(probs)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected per-image probabilities of shape (N, K), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError(f"{name}: no images (0 rows)")
    if k is not None and arr.shape[1] != k:
        raise DataError(f"{name}: expected {k} class columns, got {arr.shape[1]}")
    if arr.shape[1] < 2:
        raise DataError(f"{name}: need at least 2 classes, got {arr.shape[1]}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise DataError(f"{name}: {bad} of {arr.shape[0]} rows contain NaN or Inf")
    if (arr < 0).any():
        raise DataError(f"{name}: negative probabilities (min {arr.min():.4g})")
    sums = arr.sum(axis=1)
    if np.abs(sums - 1.0).max() > ROW_SUM_TOL:
        worst = float(sums[np.argmax(np.abs(sums - 1.0))])
        raise DataError(f"{name}: rows must sum to 1 (probabilities, not logits); a row sums to {worst:.4g}")
    return arr / sums[:, None]


def check_distribution(dist: np.ndarray, name: str = "distribution", k: int | None = None) -> np.ndarray:
    """Validate a distribution over K classes (last axis); leading axes are allowed (e.g. bootstrap)."""
    arr = np.asarray(dist, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] < 2:
        raise DataError(f"{name}: expected a distribution over at least 2 classes, got shape {arr.shape}")
    if k is not None and arr.shape[-1] != k:
        raise DataError(f"{name}: expected {k} classes, got {arr.shape[-1]}")
    if not np.isfinite(arr).all():
        raise DataError(f"{name}: contains NaN or Inf")
    if (arr < -1e-12).any():
        raise DataError(f"{name}: negative entries (min {arr.min():.4g})")
    if np.abs(arr.sum(axis=-1) - 1.0).max() > ROW_SUM_TOL:
        raise DataError(f"{name}: must sum to 1 over classes, sums to {float(arr.sum(axis=-1).ravel()[0]):.4g}")
    return arr


def target_or_uniform(target: np.ndarray | None, k: int, name: str = "target") -> np.ndarray:
    """The target distribution π, uniform (1/K each) when None."""
    if target is None:
        return np.full(k, 1.0 / k)
    arr = check_distribution(target, name, k)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected shape ({k},), got {arr.shape}")
    return arr / arr.sum()


def check_confusion(confusion: np.ndarray, k: int, name: str = "confusion") -> np.ndarray:
    """Validate a confusion matrix C[i, j] = P(pred j | true i): (K, K), non-negative, rows sum to 1."""
    arr = np.asarray(confusion, dtype=np.float64)
    if arr.shape != (k, k):
        raise DataError(f"{name}: expected shape ({k}, {k}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{name}: contains NaN or Inf")
    if (arr < 0).any():
        raise DataError(f"{name}: negative entries")
    sums = arr.sum(axis=1)
    if np.abs(sums - 1.0).max() > ROW_SUM_TOL:
        raise DataError(f"{name}: row i must be P(pred | true i) and sum to 1; row sums {np.round(sums, 4).tolist()}")
    return arr / sums[:, None]


def scalar_or_array(x: np.ndarray) -> float | np.ndarray:
    """A 0-d result becomes a Python float; batched results stay arrays."""
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def check_counts(counts: np.ndarray, k: int, name: str = "confusion_n") -> np.ndarray:
    """Validate the labelled images per true class behind a confusion matrix's rows: (K,) positive
    whole numbers; returned as int64."""
    arr = np.asarray(counts)
    if arr.shape != (k,):
        raise DataError(f"{name}: expected {k} counts (one per true class), got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise DataError(f"{name}: counts must be finite numbers, got {arr.tolist()}")
    if (arr < 1).any() or (arr != np.round(arr)).any():
        raise DataError(f"{name}: counts must be whole numbers >= 1, got {arr.tolist()}")
    return arr.astype(np.int64)
