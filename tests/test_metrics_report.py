"""Metric records: schema, hand values, determinism, named prompts, CLEAM variants, intersectional, means."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmark.errors import DataError
from benchmark.metrics import (
    corrected_distribution,
    fairness_discrepancy,
    fairness_records,
    intersectional_records,
    mean_records,
)

KEYS = {"prompt_id", "metric", "variant", "value", "ci_low", "ci_high", "n", "higher_is_better"}
CLASSES = ["red", "blue"]


def _binary(first: list[float]) -> np.ndarray:
    p = np.array(first, dtype=np.float64)
    return np.stack([p, 1 - p], axis=1)


def _index(records):
    return {(r["prompt_id"], r["metric"], r["variant"]): r for r in records}


def _probs(seed: int = 0, n_prompts: int = 3, n: int = 80) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"p{i}": rng.dirichlet([2.0 + i, 1.0], size=n) for i in range(n_prompts)}


def test_hand_computed_records():
    # Prompt a: hard counts (3, 1), soft mean (0.65, 0.35); prompt b: hard (1, 1), soft (0.5, 0.5).
    probs = {"a": _binary([0.9, 0.6, 0.3, 0.8]), "b": _binary([0.7, 0.3])}
    rec = _index(fairness_records(probs, CLASSES, n_boot=0))
    assert rec[("a", "fd", "hard")]["value"] == pytest.approx(math.sqrt(2) * 0.25)
    assert rec[("a", "fd", "soft")]["value"] == pytest.approx(math.sqrt(2) * 0.15)
    assert rec[("b", "fd", "hard")]["value"] == pytest.approx(0.0)
    assert rec[(None, "fd", "hard")]["value"] == pytest.approx(math.sqrt(2) * 0.125)
    assert rec[(None, "fd", "hard")]["n"] == 6 and rec[("a", "fd", "hard")]["n"] == 4
    assert rec[("a", "spd", "proportion-gap")]["value"] == pytest.approx(0.5)
    assert rec[("a", "invdiff_bias", "hard")]["value"] == pytest.approx(0.5)
    assert rec[(None, "invdiff_bias", "hard")]["value"] == pytest.approx(0.25)
    assert rec[("a", "deviation_ratio", "hard")]["value"] == pytest.approx(0.5)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert rec[("a", "entropy", "hard")]["value"] == pytest.approx(h)
    assert rec[("a", "kl", "hard")]["value"] == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert rec[("a", "fd", "hard")]["ci_low"] is None
    assert rec[("a", "entropy", "soft")]["higher_is_better"] is True
    assert rec[("a", "fd", "soft")]["higher_is_better"] is False


def test_schema_and_json():
    records = fairness_records(_probs(), CLASSES, n_boot=50)
    for r in records:
        assert set(r) == KEYS
        assert isinstance(r["value"], float) and isinstance(r["n"], int)
        if r["metric"] != "target_p":  # a p-value has no interval
            assert r["ci_low"] <= r["value"] <= r["ci_high"]
    json.loads(json.dumps(records, allow_nan=False))
    got = {(r["metric"], r["variant"]) for r in records}
    assert got == {
        ("fd", "soft"), ("fd", "hard"), ("spd", "proportion-gap"), ("entropy", "soft"), ("entropy", "hard"),
        ("kl", "soft"), ("kl", "hard"), ("deviation_ratio", "hard"), ("invdiff_bias", "hard"),
        ("target_p", "chi-square"), ("target_p", "chi-square-fisher"),
    }  # fmt: skip
    # Every (metric, variant) has one record per prompt and one set record whose value is the prompt mean
    # (the p-values combine instead: test_target_p_is_pearsons_chi_square_and_fishers_combination).
    rec = _index(records)
    for metric, variant in got - {("target_p", "chi-square"), ("target_p", "chi-square-fisher")}:
        per = [rec[(f"p{i}", metric, variant)]["value"] for i in range(3)]
        assert rec[(None, metric, variant)]["value"] == pytest.approx(np.mean(per))


def test_deterministic_and_independent_of_prompt_order():
    probs = _probs()
    a = fairness_records(probs, CLASSES, n_boot=200, seed=1)
    b = fairness_records(dict(reversed(list(probs.items()))), CLASSES, n_boot=200, seed=1)
    assert _index(a) == _index(b)
    c = fairness_records(probs, CLASSES, n_boot=200, seed=2)
    assert _index(a)[(None, "fd", "soft")]["ci_low"] != _index(c)[(None, "fd", "soft")]["ci_low"]
    # A prompt's interval does not depend on which other prompts are present.
    alone = fairness_records({"p1": probs["p1"]}, CLASSES, n_boot=200, seed=1)
    assert _index(alone)[("p1", "fd", "hard")] == _index(a)[("p1", "fd", "hard")]


def test_cleam_variants_only_with_confusion():
    probs = _probs()
    plain = _index(fairness_records(probs, CLASSES, n_boot=0))
    assert ("p0", "fd", "hard-cleam") not in plain
    c = np.array([[0.9, 0.1], [0.2, 0.8]])
    rec = _index(fairness_records(probs, CLASSES, confusion=c, n_boot=100))
    assert ("p0", "fd", "soft-cleam") not in rec  # soft shares need the soft matrix, not the argmax one
    for pid in ("p0", None):
        # The classifier shrinks apparent bias towards its own mix; correcting widens the gap again.
        assert rec[(pid, "fd", "hard-cleam")]["value"] > rec[(pid, "fd", "hard")]["value"]
    soft_c = np.array([[0.8, 0.2], [0.3, 0.7]])
    both = _index(fairness_records(probs, CLASSES, confusion=c, soft_confusion=soft_c, n_boot=100))
    soft = probs["p0"].mean(axis=0)
    p_soft = (soft[0] - 0.3) / 0.5  # the soft matrix's own K = 2 inversion
    assert both[("p0", "fd", "soft-cleam")]["value"] == pytest.approx(fairness_discrepancy([p_soft, 1 - p_soft]))
    assert both[("p0", "fd", "hard-cleam")] == rec[("p0", "fd", "hard-cleam")]
    p_hat = probs["p0"].argmax(axis=1)
    hard = np.bincount(p_hat, minlength=2) / len(p_hat)
    p0 = (hard[0] - 0.2) / 0.7  # CLEAM's K = 2 closed form
    assert rec[("p0", "fd", "hard-cleam")]["value"] == pytest.approx(fairness_discrepancy([p0, 1 - p0]))


def test_target_with_zero_drops_kl_and_deviation_ratio():
    rec = _index(fairness_records(_probs(), CLASSES, target=np.array([1.0, 0.0]), n_boot=0))
    assert ("p0", "kl", "hard") not in rec and ("p0", "deviation_ratio", "hard") not in rec
    hard = np.bincount(_probs()["p0"].argmax(axis=1), minlength=2) / 80
    assert rec[("p0", "fd", "hard")]["value"] == pytest.approx(fairness_discrepancy(hard, [1.0, 0.0]))


def test_named_prompts_feed_group_conditioned_spd_only():
    probs = {
        "free": _binary([0.9, 0.8, 0.2, 0.7]),
        "red-1": _binary([0.9, 0.8, 0.7, 0.1]),  # 3 of 4 red
        "red-2": _binary([0.6, 0.4]),  # 1 of 2 red
        "blue-1": _binary([0.1, 0.2, 0.3, 0.4, 0.9]),  # 4 of 5 blue
    }
    named = {"red-1": "red", "red-2": "red", "blue-1": "blue", "free": None}
    rec = _index(fairness_records(probs, CLASSES, named=named, n_boot=300))
    assert ("red-1", "fd", "hard") not in rec
    assert rec[(None, "fd", "hard")]["n"] == 4
    gc = rec[(None, "spd", "group-conditioned")]
    # Pooled rates: red 4/6, blue 4/5.
    assert gc["value"] == pytest.approx(abs(4 / 6 - 4 / 5))
    assert gc["n"] == 11 and gc["ci_low"] <= gc["value"] <= gc["ci_high"]
    # One named class alone has no gap to measure.
    one = _index(fairness_records(probs, CLASSES, named={"red-1": "red"}, n_boot=0))
    assert (None, "spd", "group-conditioned") not in one


def test_intersectional_records():
    pa = {"x": _binary([0.9, 0.8, 0.2, 0.4]), "named": _binary([0.9, 0.9])}
    pb = {"x": np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3], [0.7, 0.2, 0.1]]), "named": np.eye(3)[:2]}
    recs = intersectional_records(pa, pb, CLASSES, ["s", "m", "l"], named_a={"named": "red"}, n_boot=0)
    rec = _index(recs)
    assert ("named", "fd", "hard") not in rec  # names only one attribute: left out
    # Hard joint classes of "x": (red,s), (red,l), (blue,m), (blue,s) → one each of 6 cells.
    joint = np.array([1, 0, 1, 1, 1, 0]) / 4
    assert rec[("x", "fd", "hard")]["value"] == pytest.approx(fairness_discrepancy(joint))
    soft = np.einsum("ni,nj->nij", pa["x"], pb["x"]).reshape(4, 6).mean(axis=0)
    assert rec[("x", "fd", "soft")]["value"] == pytest.approx(fairness_discrepancy(soft))
    ca, cb = np.array([[0.9, 0.1], [0.2, 0.8]]), np.eye(3)
    with_c = _index(intersectional_records(pa, pb, CLASSES, ["s", "m", "l"], confusion_a=ca, confusion_b=cb, n_boot=0))
    # Joint confusion C_a ⊗ C_b applied to the joint hard distribution.
    corrected = corrected_distribution(joint, np.kron(ca, cb))
    assert with_c[("x", "fd", "hard-cleam")]["value"] == pytest.approx(fairness_discrepancy(corrected))
    with pytest.raises(DataError, match="different prompt ids"):
        intersectional_records(pa, {"x": pb["x"]}, CLASSES, ["s", "m", "l"])


def test_mean_records():
    vals = {"a": np.array([10.0, 20.0, 30.0]), "b": np.array([40.0])}
    rec = _index(mean_records(vals, "clip_t", "prompt", n_boot=100))
    assert rec[("a", "clip_t", "prompt")]["value"] == pytest.approx(20.0)
    assert rec[(None, "clip_t", "prompt")]["value"] == pytest.approx(30.0)
    assert rec[(None, "clip_t", "prompt")]["n"] == 4 and rec[(None, "clip_t", "prompt")]["higher_is_better"]
    assert 10.0 <= rec[("a", "clip_t", "prompt")]["ci_low"] <= rec[("a", "clip_t", "prompt")]["ci_high"] <= 30.0
    assert rec[("b", "clip_t", "prompt")]["ci_low"] == 40.0
    with pytest.raises(DataError, match="NaN"):
        mean_records({"a": np.array([np.nan])}, "clip_i", "vs-baseline")


@pytest.mark.parametrize(
    "probs, kwargs, match",
    [
        ({}, {}, "empty"),
        ({"p": np.array([[0.5, np.nan]])}, {}, "probs\\['p'\\].*NaN"),
        ({"p": np.zeros((0, 2))}, {}, "no images"),
        ({"p": np.ones((3, 3)) / 3}, {}, "expected 2 class"),
        ({"p": _binary([0.5])}, {"named": {"p": "green"}}, "green"),
        ({"p": _binary([0.5])}, {"named": {"q": "red"}}, "without predictions"),
        ({"p": _binary([0.5])}, {"target": np.array([0.7, 0.7])}, "target"),
    ],
)
def test_bad_input_one_line_error(probs, kwargs, match):
    with pytest.raises(DataError, match=match) as err:
        fairness_records(probs, CLASSES, **kwargs)
    assert "\n" not in str(err.value)


def _draw(rng: np.random.Generator, shares: list[float], n: int) -> np.ndarray:
    """n images of a classifier that is right: one-hot-ish probabilities of labels drawn from ``shares``."""
    labels = rng.choice(len(shares), size=n, p=shares)
    probs = np.full((n, len(shares)), 0.02 / (len(shares) - 1))
    probs[np.arange(n), labels] = 0.98
    return probs


def test_fd_interval_reaches_zero_when_the_truth_is_fair():
    """A percentile bootstrap interval of FD almost never contains 0 when the truth is exactly fair
    (FD is a norm); the region interval does, at about its nominal rate, per prompt and per set."""
    rng = np.random.default_rng(0)
    prompt_hits = set_hits = 0
    reps = 40
    for r in range(reps):
        probs = {f"p{i}": _draw(rng, [0.5, 0.5], 200) for i in range(4)}
        rec = _index(fairness_records(probs, CLASSES, n_boot=400, seed=r))
        prompt_hits += rec[("p0", "fd", "soft")]["ci_low"] == 0.0
        set_hits += rec[(None, "fd", "soft")]["ci_low"] == 0.0
    assert prompt_hits >= 0.85 * reps and set_hits >= 0.85 * reps


def test_fd_interval_covers_a_biased_truth_and_excludes_zero():
    rng = np.random.default_rng(1)
    hits = excluded = 0
    for r in range(40):
        rec = _index(fairness_records({"p": _draw(rng, [0.75, 0.25], 200)}, CLASSES, n_boot=400, seed=r))[("p", "fd", "hard")]
        truth = fairness_discrepancy([0.75, 0.25])
        hits += rec["ci_low"] <= truth <= rec["ci_high"]
        excluded += rec["ci_low"] > 0
    assert hits >= 34 and excluded == 40


def test_target_p_is_pearsons_chi_square_and_fishers_combination():
    from scipy.stats import chisquare, combine_pvalues

    probs = _probs()
    rec = _index(fairness_records(probs, CLASSES, n_boot=0))
    ps = []
    for pid in ("p0", "p1"):
        counts = np.bincount(probs[pid].argmax(axis=1), minlength=2)
        ps.append(chisquare(counts).pvalue)
        assert rec[(pid, "target_p", "chi-square")]["value"] == pytest.approx(ps[-1])
    assert rec[(None, "target_p", "chi-square-fisher")]["value"] == pytest.approx(combine_pvalues(ps).pvalue)


def test_chi_square_helpers_equal_scipy_stats_bit_for_bit():
    from scipy.stats import chi2

    from benchmark.metrics.report import _chi2_ppf, _chi2_sf

    for dof in (1, 2, 5, 11, 63):
        for level in (0.8, 0.95, 0.99):
            assert _chi2_ppf(level, dof) == float(chi2.ppf(level, dof))
        for stat in (0.0, 0.3, 4.2, 77.0):
            assert _chi2_sf(stat, dof) == float(chi2.sf(stat, dof))
    # No degree of freedom (the target leaves one class): no test, and the record reads 1.0. chisquare
    # gave chdtrc(0, x) = 0.0 for a statistic that rounding left at 1e-30 instead of 0.
    assert np.isnan(_chi2_sf(1e-30, 0)) and np.isnan(_chi2_sf(0.0, 0))


def test_paired_deltas_against_the_baseline():
    from benchmark.metrics import paired_delta_records

    rng = np.random.default_rng(2)
    base = {f"p{i}": _draw(rng, [0.8, 0.2], 200) for i in range(3)}
    same = _index(paired_delta_records(base, base, CLASSES, n_boot=300))
    assert same[(None, "delta_fd", "soft")]["value"] == 0.0
    assert same[(None, "delta_fd", "soft")]["ci_low"] == same[(None, "delta_fd", "soft")]["ci_high"] == 0.0
    assert same[(None, "delta_fd", "soft")]["p_value"] == 1.0
    # A method that moves 40 of 200 images of each prompt from red to blue, on the same seeds.
    fairer = {}
    for pid, p in base.items():
        q = p.copy()
        red = np.flatnonzero(q.argmax(axis=1) == 0)[:40]
        q[red] = q[red][:, ::-1]
        fairer[pid] = q
    rec = _index(paired_delta_records(fairer, base, CLASSES, n_boot=300))[(None, "delta_fd", "hard")]
    expected = np.mean([fairness_discrepancy(np.bincount(fairer[p].argmax(1), minlength=2) / 200)
                        - fairness_discrepancy(np.bincount(base[p].argmax(1), minlength=2) / 200) for p in base])
    assert rec["value"] == pytest.approx(expected) and rec["ci_high"] < 0 and rec["p_value"] < 0.01
    # Pairing: the interval is narrower than the two methods' own intervals would suggest.
    own = _index(fairness_records(fairer, CLASSES, n_boot=300))[(None, "fd", "hard")]
    assert rec["ci_high"] - rec["ci_low"] < (own["ci_high"] - own["ci_low"]) / 2
    with pytest.raises(DataError, match="baseline"):
        paired_delta_records({"p0": fairer["p0"][:10]}, base, CLASSES)
