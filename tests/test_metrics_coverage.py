"""Slow: simulated coverage of the FD intervals at and away from the fair boundary (docs/metrics.md).

Seeded simulation: a prompt's hard labels drawn from true shares at a chosen FD from uniform, a
classifier that reports them, 400 replicates per cell. Nominal 0.95; the bar is 0.93 per prompt and for
the set of 4 prompts (the set interval is simultaneous over its prompts and covers more often)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.metrics import fairness_records

REPS = 400


def _truth(fd: float, k: int) -> np.ndarray:
    shares = np.full(k, 1.0 / k)
    shares[0] += fd / np.sqrt(2)
    shares[-1] -= fd / np.sqrt(2)
    return shares


def _coverage(k: int, n: int, fd: float, prompts: int = 4) -> tuple[float, float]:
    rng = np.random.default_rng([k, n, int(fd * 100)])
    classes = [str(c) for c in range(k)]
    shares = _truth(fd, k)
    prompt_hits = set_hits = 0
    for rep in range(REPS):
        probs = {}
        for i in range(prompts):
            labels = rng.choice(k, size=n, p=shares)
            p = np.full((n, k), 0.1 / (k - 1))
            p[np.arange(n), labels] = 0.9
            probs[f"p{i}"] = p
        recs = {(r["prompt_id"], r["variant"]): r for r in fairness_records(probs, classes, n_boot=1000, seed=rep)
                if r["metric"] == "fd"}
        one, whole = recs[("p0", "hard")], recs[(None, "hard")]
        prompt_hits += one["ci_low"] - 1e-12 <= fd <= one["ci_high"] + 1e-12
        set_hits += whole["ci_low"] - 1e-12 <= fd <= whole["ci_high"] + 1e-12
    return prompt_hits / REPS, set_hits / REPS


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("n", [64, 200])
@pytest.mark.parametrize("fd", [0.0, 0.05, 0.1, 0.3])
def test_fd_interval_coverage(k: int, n: int, fd: float) -> None:
    prompt, whole = _coverage(k, n, fd)
    print(f"K={k} n={n} FD={fd}: prompt {prompt:.3f} set {whole:.3f}")
    assert prompt >= 0.93 and whole >= 0.93
