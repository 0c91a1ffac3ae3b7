"""Seeded percentile bootstrap confidence intervals (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993).

Per prompt: resample the prompt's N images with replacement B times, recompute the statistic, and take
the (α/2, 1 − α/2) percentiles of the B values. Per prompt set: the set value is the mean over prompts
of the per-prompt statistic; each resample draws images within every prompt (stratified), so the
interval reflects image sampling with the prompt list held fixed.

Every draw comes from ``numpy.random.default_rng([seed, hash(prompt id)])``, so a prompt's resamples do
not depend on which other prompts are present or their order, and results repeat exactly given the seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from benchmark.errors import DataError

DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95


class Interval(NamedTuple):
    value: float
    low: float
    high: float


def rng_for(seed: int, key: str | None = None) -> np.random.Generator:
    """The generator for one prompt (``key`` = prompt id); ``key=None`` gives ``default_rng(seed)``."""
    if key is None:
        return np.random.default_rng(seed)
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def resample_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement, all at once."""
    if n <= 0:
        raise DataError("bootstrap: no rows to resample")
    if n_boot < 1:
        raise DataError(f"bootstrap: n_boot must be at least 1, got {n_boot}")
    return rng.integers(0, n, size=(n_boot, n))


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of bootstrap samples."""
    if not 0 < level < 1:
        raise DataError(f"bootstrap: level must be in (0, 1), got {level}")
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(samples, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return low, high


def _apply(rows: np.ndarray, idx: np.ndarray, statistic: Callable, vectorized: bool) -> np.ndarray:
    if vectorized:
        out = np.asarray(statistic(rows[idx]), dtype=np.float64)
        if out.shape != (idx.shape[0],):
            raise DataError(f"bootstrap: vectorized statistic must return shape ({idx.shape[0]},), got {out.shape}")
        return out
    return np.array([float(statistic(rows[i])) for i in idx])


def bootstrap_ci(
    rows: np.ndarray,
    statistic: Callable[[np.ndarray], float | np.ndarray],
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    key: str | None = None,
    vectorized: bool = False,
) -> Interval:
    """Percentile bootstrap interval for ``statistic`` of per-image ``rows`` (first axis = images).

    ``statistic(rows) -> float``; with ``vectorized=True`` it receives (n_boot, N, ...) and returns (n_boot,).
    """
    rows = np.asarray(rows)
    if rows.ndim == 0 or rows.shape[0] == 0:
        raise DataError("bootstrap: no rows (empty input)")
    value = float(np.asarray(statistic(rows[None]) if vectorized else statistic(rows)).reshape(-1)[0])
    idx = resample_indices(rows.shape[0], n_boot, rng_for(seed, key))
    low, high = percentile_interval(_apply(rows, idx, statistic, vectorized), level)
    return Interval(value, float(low), float(high))


def bootstrap_set_ci(
    rows_by_prompt: Mapping[str, np.ndarray],
    statistic: Callable[[np.ndarray], float | np.ndarray],
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    vectorized: bool = False,
) -> Interval:
    """Interval for the prompt-set value mean_p statistic(rows_p), resampling images within each prompt."""
    if not rows_by_prompt:
        raise DataError("bootstrap: no prompts (empty input)")
    values, samples = [], []
    for pid, rows in rows_by_prompt.items():
        rows = np.asarray(rows)
        if rows.ndim == 0 or rows.shape[0] == 0:
            raise DataError(f"bootstrap: prompt {pid!r} has no rows")
        values.append(float(np.asarray(statistic(rows[None]) if vectorized else statistic(rows)).reshape(-1)[0]))
        idx = resample_indices(rows.shape[0], n_boot, rng_for(seed, pid))
        samples.append(_apply(rows, idx, statistic, vectorized))
    low, high = percentile_interval(np.mean(samples, axis=0), level)
    return Interval(float(np.mean(values)), float(low), float(high))
