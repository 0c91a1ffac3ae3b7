"""Coverage of the training-seed interval (``benchmark.study.seed_and_image_interval``; docs/studies.md).

Seeded simulation of a training-seed study as `training-seeds` runs it: a method whose true red share
on each of 12 prompts (the world's prompts that do not name a colour) moves with its training seed,
64 images per prompt and seed, K = 2, uniform target, near-one-hot soft probabilities like the `world`
classifier's. Prompt p's share, before the seed effect, sits at ±(0.5 … 1.5)·d/√2 from ½ (signs
alternating), so the set-level FD without a seed effect is d. Training seed s shifts every prompt's logit
by b_s ~ N(0, τ) plus a prompt-specific N(0, τ/2) (the world's DDM: a common shift of about 0.45 on the
logit scale over seeds 0–2, InvDiff and DiffLens under 0.1). Every seed samples the same image seeds,
so its images are correlated with the other seeds' (the world study: 0.7–0.99 across training seeds):
each image reuses the shared uniform draw that decides its class with probability ρ = 0.9.

The estimand is what the interval is defined for: the expected set-level FD of one training run,
E_s[(1/P) Σ_p ‖π_sp − ½‖₂] with π_sp the seed's expected soft share (computed from 400,000 simulated
seeds). 300 replicates per cell, 200 bootstrap draws inside (the study uses 1,000).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from benchmark.study import seed_and_image_interval

PROMPTS, IMAGES = 12, 64
TARGET = np.array([0.5, 0.5])
EPS = (0.3, 30.0)  # an image of the true class reads 1 − ε, ε ~ Beta(0.3, 30) (mean 0.01)
MEAN_EPS = EPS[0] / (EPS[0] + EPS[1])
REPS, DRAWS = 300, 200


def _centres(fd: float) -> np.ndarray:
    """Each prompt's true-class red share, so that the expected soft shares are at set-level FD ``fd``."""
    spread = 0.5 + np.arange(PROMPTS) / (PROMPTS - 1)
    sign = np.where(np.arange(PROMPTS) % 2 == 0, 1.0, -1.0)
    return 0.5 + sign * spread * fd / np.sqrt(2) / (1 - 2 * MEAN_EPS)


def _shares(fd: float, tau: float, rng: np.random.Generator, seeds: int) -> np.ndarray:
    shift = rng.normal(0, tau, (seeds, 1)) + rng.normal(0, tau / 2, (seeds, PROMPTS))
    return expit(logit(_centres(fd))[None, :] + shift)


def truth(fd: float, tau: float, draws: int = 400_000) -> tuple[float, float]:
    """(E_s of the seed's set-level FD: the estimand; FD of the mean share over seeds: not the estimand)."""
    soft = MEAN_EPS + _shares(fd, tau, np.random.default_rng([7, round(fd * 1000), round(tau * 1000)]), draws) * (1 - 2 * MEAN_EPS)
    return (float(np.sqrt(2) * np.abs(soft - 0.5).mean(axis=1).mean()),
            float(np.sqrt(2) * np.abs(soft.mean(axis=0) - 0.5).mean()))


def study(fd: float, tau: float, seeds: int, rho: float, rng: np.random.Generator) -> dict:
    """One simulated study: training seed label → prompt → (64, 2) soft probabilities."""
    share = _shares(fd, tau, rng, seeds)
    u_shared, e_shared = rng.random((PROMPTS, IMAGES)), rng.beta(*EPS, (PROMPTS, IMAGES))
    own = rng.random((seeds, PROMPTS, IMAGES)) >= rho
    u = np.where(own, rng.random((seeds, PROMPTS, IMAGES)), u_shared[None])
    e = np.where(own, rng.beta(*EPS, (seeds, PROMPTS, IMAGES)), e_shared[None])
    red = np.where(u < share[:, :, None], 1 - e, e)
    return {f"s{s}": {f"p{p}": np.stack([red[s, p], 1 - red[s, p]], 1) for p in range(PROMPTS)} for s in range(seeds)}


def coverage(fd: float, tau: float, seeds: int, rho: float = 0.9, reps: int = REPS,
             interval=seed_and_image_interval) -> dict[str, float]:
    estimand, of_mean_share = truth(fd, tau)
    rng = np.random.default_rng([seeds, round(fd * 1000), round(tau * 1000), round(rho * 100)])
    hits = hits_share = 0
    widths = []
    for rep in range(reps):
        out = interval(study(fd, tau, seeds, rho, rng), TARGET, n_boot=DRAWS, seed=rep)
        hits += out["low"] - 1e-12 <= estimand <= out["high"] + 1e-12
        hits_share += out["low"] - 1e-12 <= of_mean_share <= out["high"] + 1e-12
        widths.append(out["high"] - out["low"])
    return {"estimand": estimand, "coverage": hits / reps, "coverage_of_mean_share": hits_share / reps,
            "median_width": float(np.median(widths))}


def test_coverage_smoke() -> None:
    """The default suite's share of the check: three seeds, a fair truth and a biased one with a large
    seed effect, 60 replicates each (the old two-stage bootstrap covered 0.00 and 0.85 of 300 here)."""
    fair = coverage(0.0, 0.0, 3, reps=60)
    biased = coverage(0.3, 0.5, 3, reps=60)
    assert fair["coverage"] >= 0.9 and biased["coverage"] >= 0.9
    assert fair["median_width"] < 0.15 and biased["median_width"] < 0.2


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.9, 0.0])
@pytest.mark.parametrize("seeds", [3, 5, 10])
@pytest.mark.parametrize("tau", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("fd", [0.0, 0.1, 0.3])
def test_seed_interval_coverage(fd: float, tau: float, seeds: int, rho: float) -> None:
    got = coverage(fd, tau, seeds, rho)
    print(f"S={seeds} rho={rho} FD={fd} tau={tau}: estimand {got['estimand']:.3f} coverage {got['coverage']:.3f} "
          f"(of the mean share's FD {got['coverage_of_mean_share']:.3f}) median width {got['median_width']:.3f}")
    assert got["coverage"] >= 0.93  # measured 0.957–1.000 (2026-11-28)
    assert got["median_width"] < (0.3 if tau == 0.5 else 0.16)  # measured ≤ 0.26 / ≤ 0.15
