"""Bootstrap intervals: determinism, stratified set intervals, and coverage in a seeded simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.errors import DataError
from benchmark.metrics import bootstrap_ci, bootstrap_set_ci, fairness_discrepancy, fairness_records


def test_same_seed_same_interval_and_seed_matters():
    rows = np.random.default_rng(0).normal(size=100)
    a = bootstrap_ci(rows, np.mean, seed=3)
    assert a == bootstrap_ci(rows, np.mean, seed=3)
    assert a != bootstrap_ci(rows, np.mean, seed=4)
    assert a.value == pytest.approx(rows.mean())
    assert a.low < a.value < a.high


def test_vectorized_equals_loop():
    rows = np.random.default_rng(1).dirichlet([2, 1], size=60)
    loop = bootstrap_ci(rows, lambda r: fairness_discrepancy(r.mean(axis=0)), n_boot=200, seed=5)
    vec = bootstrap_ci(rows, lambda r: fairness_discrepancy(r.mean(axis=-2)), n_boot=200, seed=5, vectorized=True)
    assert loop.value == pytest.approx(vec.value)
    assert loop.low == pytest.approx(vec.low) and loop.high == pytest.approx(vec.high)


def test_interval_width_matches_normal_theory():
    # The mean of N(0, 1) rows has standard error 1/√n; the 95 % interval spans about 2·1.96/√n.
    rows = np.random.default_rng(2).normal(size=400)
    ci = bootstrap_ci(rows, np.mean, n_boot=2000, seed=0)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.1)


def test_set_interval_of_fairness_records_is_a_conservative_cover_of_the_percentile_one():
    """fairness_records' set interval (Bonferroni over the prompts' regions, valid at the boundary)
    contains the stratified percentile interval of the same draws, and the same value."""
    rng = np.random.default_rng(3)
    probs = {f"p{i}": rng.dirichlet([3, 1], size=50 + 10 * i) for i in range(4)}
    ci = bootstrap_set_ci(probs, lambda r: fairness_discrepancy(r.mean(axis=-2)), n_boot=300, seed=9, vectorized=True)
    rec = next(
        r
        for r in fairness_records(probs, ["a", "b"], n_boot=300, seed=9)
        if r["prompt_id"] is None and r["metric"] == "fd" and r["variant"] == "soft"
    )
    assert rec["value"] == pytest.approx(ci.value)
    assert rec["ci_low"] <= ci.low < ci.high <= rec["ci_high"]


def test_set_interval_is_narrower_than_a_single_prompt():
    rng = np.random.default_rng(4)
    rows = {f"p{i}": rng.normal(size=100) for i in range(8)}
    one = bootstrap_ci(rows["p0"], np.mean, seed=0, key="p0")
    whole = bootstrap_set_ci(rows, np.mean, seed=0)
    assert whole.high - whole.low < 0.6 * (one.high - one.low)


def test_coverage_of_fd_near_nominal():
    """200 seeded trials: the 95 % interval of hard FD covers the truth per prompt near the nominal rate;
    the set interval is simultaneous over the prompts, so it covers at least as often."""
    rng = np.random.default_rng(11)
    p_true = [0.7, 0.62, 0.8]
    true_fd = [math.sqrt(2) * abs(p - 0.5) for p in p_true]
    hit_prompt = hit_set = 0
    trials = 200
    for t in range(trials):
        probs = {}
        for i, p in enumerate(p_true):
            first = rng.random(150) < p
            conf = rng.uniform(0.55, 1.0, size=150)
            col0 = np.where(first, conf, 1 - conf)
            probs[f"p{i}"] = np.stack([col0, 1 - col0], axis=1)
        recs = fairness_records(probs, ["a", "b"], n_boot=400, seed=t)
        fd = {r["prompt_id"]: r for r in recs if r["metric"] == "fd" and r["variant"] == "hard"}
        hit_prompt += fd["p0"]["ci_low"] <= true_fd[0] <= fd["p0"]["ci_high"]
        hit_set += fd[None]["ci_low"] <= np.mean(true_fd) <= fd[None]["ci_high"]
    assert 0.90 <= hit_prompt / trials <= 0.99
    assert hit_set / trials >= 0.95


def test_empty_and_bad_input():
    with pytest.raises(DataError, match="empty"):
        bootstrap_ci(np.array([]), np.mean)
    with pytest.raises(DataError, match="empty"):
        bootstrap_set_ci({}, np.mean)
    with pytest.raises(DataError, match="level"):
        bootstrap_ci(np.ones(5), np.mean, level=1.5)
    with pytest.raises(DataError, match="vectorized statistic"):
        bootstrap_ci(np.ones(5), lambda r: r.mean(), vectorized=True)
