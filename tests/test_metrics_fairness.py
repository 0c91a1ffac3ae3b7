"""Distribution fairness metrics against hand-computed values, scipy and fairlearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from benchmark.errors import DataError
from benchmark.metrics import (
    FairnessMetric,
    class_distribution,
    deviation_ratio,
    fairness_discrepancy,
    invdiff_bias,
    invdiff_bias_summary,
    joint_classes,
    joint_labels,
    joint_probs,
    kl_divergence,
    named_class_rate,
    normalized_entropy,
    statistical_parity_difference,
)
from benchmark.metrics.fairness import joint_target

PROBS = np.array(
    [
        [0.9, 0.1],
        [0.6, 0.4],
        [0.3, 0.7],
        [0.8, 0.2],
    ]
)


def test_class_distribution_soft_and_hard():
    np.testing.assert_allclose(class_distribution(PROBS), [0.65, 0.35])
    np.testing.assert_allclose(class_distribution(PROBS, hard=True), [0.75, 0.25])


def test_fd_hand_values():
    # Hard p̂ = (0.75, 0.25): FD = sqrt(0.25² + 0.25²).
    assert fairness_discrepancy(class_distribution(PROBS, hard=True)) == pytest.approx(math.sqrt(0.125))
    assert fairness_discrepancy([0.5, 0.3, 0.2], [0.2, 0.3, 0.5]) == pytest.approx(math.sqrt(0.18))
    assert fairness_discrepancy([1 / 3] * 3) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.339, 0.5, 0.77, 1.0])
def test_fd_k2_is_sqrt2_times_gap(p):
    assert fairness_discrepancy([p, 1 - p]) == pytest.approx(math.sqrt(2) * abs(p - 0.5))


def test_fd_difflens_example():
    # DiffLens paper's worked example: M:F = 33.9:66.1 gives FD ≈ 0.227.
    assert fairness_discrepancy([0.339, 0.661]) == pytest.approx(0.227, abs=1e-3)


def test_fd_is_batched_over_leading_axes():
    d = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    np.testing.assert_allclose(fairness_discrepancy(d), [0.0, math.sqrt(0.5), math.sqrt(0.125)])


def test_spd_proportion_gap():
    assert statistical_parity_difference([0.5, 0.3, 0.2]) == pytest.approx(0.3)
    assert statistical_parity_difference([0.25] * 4) == 0.0


def test_spd_group_conditioned_matches_fairlearn():
    from fairlearn.metrics import MetricFrame, demographic_parity_difference, selection_rate

    rng = np.random.default_rng(3)
    classes = ["red", "blue", "green"]
    # Prompts naming a class; rate = share of images whose argmax is the named class.
    sizes = {"red": 40, "blue": 25, "green": 60}
    hits, groups, rates = [], [], {}
    for g, n in sizes.items():
        probs = rng.dirichlet([1.0, 1.0, 1.0], size=n)
        idx = classes.index(g)
        h = (probs.argmax(axis=1) == idx).astype(int)
        hits.append(h)
        groups += [g] * n
        rates[g] = named_class_rate(probs, idx)
    y_pred = np.concatenate(hits)
    frame = MetricFrame(metrics=selection_rate, y_true=y_pred, y_pred=y_pred, sensitive_features=groups)
    for g in sizes:
        assert rates[g] == pytest.approx(frame.by_group[g])
    ours = statistical_parity_difference(np.array(list(rates.values())))
    assert ours == pytest.approx(demographic_parity_difference(y_pred, y_pred, sensitive_features=groups))
    assert ours > 0.05


def test_named_class_rate_soft_and_hard():
    assert named_class_rate(PROBS, 0) == pytest.approx(0.75)
    assert named_class_rate(PROBS, 1, hard=False) == pytest.approx(0.35)
    with pytest.raises(DataError):
        named_class_rate(PROBS, 2)


def test_normalized_entropy():
    assert normalized_entropy([0.25] * 4) == pytest.approx(1.0)
    assert normalized_entropy([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert normalized_entropy([0.5, 0.5, 0.0]) == pytest.approx(math.log(2) / math.log(3))
    p = np.array([0.6, 0.3, 0.1])
    assert normalized_entropy(p) == pytest.approx(scipy_entropy(p) / math.log(3))


def test_kl_divergence():
    # 0.75 ln 1.5 + 0.25 ln 0.5
    assert kl_divergence([0.75, 0.25]) == pytest.approx(0.1308121, abs=1e-7)
    p, q = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.5, 0.3])
    assert kl_divergence(p, q) == pytest.approx(scipy_entropy(p, q))
    assert kl_divergence([1.0, 0.0]) == pytest.approx(math.log(2))
    with pytest.raises(DataError, match="zero entry"):
        kl_divergence([0.5, 0.5], [1.0, 0.0])


def test_deviation_ratio_hand_value():
    # Counts (6, 3, 1) of 10: Δ = (1/3)·(|.6−⅓| + |.3−⅓| + |.1−⅓|)/(⅓) = 0.5333…
    assert deviation_ratio([0.6, 0.3, 0.1]) == pytest.approx(1.6 / 3)
    assert deviation_ratio([0.5, 0.5]) == 0.0
    assert deviation_ratio([1.0, 0.0]) == pytest.approx(1.0)


def test_invdiff_bias_hand_values():
    # Counts (6, 3, 1): (|6−3| + |6−1| + |3−1|) / 10 / 3 = 1/3.
    assert invdiff_bias(np.array([6, 3, 1]) / 10) == pytest.approx(1 / 3)
    assert invdiff_bias([1.0, 0.0]) == pytest.approx(1.0)
    assert invdiff_bias([0.5, 0.5]) == 0.0
    assert invdiff_bias_summary(np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx((0.5, 0.5))


def test_joint_attributes():
    a = np.array([[0.8, 0.2], [0.3, 0.7]])
    b = np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    j = joint_probs(a, b)
    np.testing.assert_allclose(j[0], [0.08, 0.48, 0.24, 0.02, 0.12, 0.06])
    np.testing.assert_allclose(j.sum(axis=1), 1.0)
    # Image 0: (class 0, class 1) → 0·3 + 1; image 1: (1, 0) → 3.
    np.testing.assert_array_equal(joint_labels(a, b), [1, 3])
    assert joint_classes(["m", "f"], ["x", "y", "z"])[3] == "f×x"
    np.testing.assert_allclose(joint_target(None, None, 2, 3), np.full(6, 1 / 6))
    with pytest.raises(DataError, match="probs_b has"):
        joint_probs(a, b[:1])


def test_streaming_metric_equals_batch():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([3.0, 1.0, 1.0], size=50)
    m = FairnessMetric(k=3)
    for chunk in np.array_split(probs, 4):
        m.update(chunk)
    out = m.compute()
    assert out["fd/soft"] == pytest.approx(fairness_discrepancy(probs.mean(axis=0)))
    assert out["fd/hard"] == pytest.approx(fairness_discrepancy(class_distribution(probs, hard=True)))
    assert out["deviation_ratio/hard"] == pytest.approx(deviation_ratio(class_distribution(probs, hard=True)))
    m.reset()
    with pytest.raises(DataError, match="no images"):
        m.compute()


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[0.5, np.nan], [0.5, 0.5]]), "NaN"),
        (np.zeros((0, 2)), "no images"),
        (np.array([[2.0, -1.0]]), "negative"),
        (np.array([[3.0, 1.0]]), "sum to 1"),
        (np.array([0.5, 0.5]), "shape"),
    ],
)
def test_bad_probabilities_raise_one_line_data_error(bad, match):
    with pytest.raises(DataError, match=match) as err:
        class_distribution(bad)
    assert "\n" not in str(err.value)
