"""The faster interval code gives exactly the numbers of the plain one it replaced: the region
intervals' range over numpy arrays against min/max over a Python list (scipy's χ² quantile asked each
time), and the remembered bootstrap draws against fresh ones. Compared by repr: bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

import benchmark.metrics.report as report


def _plain_region_interval(spec, value, boot, boot_values, region, level, special):
    """The per-record implementation before the change (min/max over a list of Python floats)."""
    inside = boot_values[region.distance <= region.threshold(level)]
    edge = region.boundary(boot, level)
    candidates = [value, *inside.tolist(), *(np.atleast_1d(spec(edge)).tolist() if len(edge) else [])]
    candidates += [v for truth, v in special if region.contains(spec.observed(truth), level, truth)]
    return float(min(candidates)), float(max(candidates))


@pytest.mark.parametrize("trial", range(40))
def test_region_intervals_equal_the_plain_ones(trial) -> None:
    rng = np.random.default_rng(trial)
    k, n, b = int(rng.integers(2, 7)), int(rng.integers(5, 300)), int(rng.integers(20, 400))
    probs = rng.dirichlet(np.ones(k) * rng.uniform(0.2, 5), size=n)
    data = report._compute_prompt_data(f"p{trial}", probs, probs.argmax(axis=1), b, trial)
    target = rng.dirichlet(np.ones(k))
    confusion = np.eye(k) * 0.8 + 0.2 / k
    uniform = np.full(k, 1 / k)
    for spec in report._distribution_metrics(target, confusion, confusion):
        shares = getattr(data, f"{spec.source}_boot")
        region = report._Region(getattr(data, spec.source), shares, data.n if spec.source == "hard" else None)
        value = float(spec(getattr(data, spec.source)))
        special = [(target, float(spec.f(target))), (uniform, float(spec.f(uniform)))]
        levels = (0.95, 1 - 0.05 / 14)  # both levels' surfaces through the metric in one call
        want = [_plain_region_interval(spec, value, shares, np.asarray(spec(shares)), region, level, special)
                for level in levels]
        got = report._region_intervals(spec, value, shares, np.asarray(spec(shares)), region, levels, special)
        assert repr(got) == repr(want)
        again = report._region_intervals(spec, value, shares, np.asarray(spec(shares)), region, levels, special)
        assert repr(again) == repr(want)  # the region's remembered special-point tests give the same answers
    for level, dof in ((0.95, 1), (0.99, 5), (1 - 0.05 / 14, 3)):
        assert report._chi2_ppf(level, dof) == float(chi2.ppf(level, dof))


@pytest.mark.parametrize(("first", "rest"), [(0.0, [-0.0, 0.0]), (-0.0, [0.0]), (float("nan"), [1.0]),
                                             (1.0, [float("nan"), 0.5, 0.5]), (2.0, []),
                                             (1.0, [float("inf"), -float("inf"), float("nan")])])
def test_first_extreme_is_pythons_min_and_max(first, rest) -> None:
    for lowest, builtin in ((True, min), (False, max)):
        assert repr(report._first_extreme(first, np.array(rest, dtype=float), lowest)) == repr(float(builtin([first, *rest])))


def test_remembered_draws_equal_fresh_ones_and_are_read_only() -> None:
    rng = np.random.default_rng(7)
    probs = {f"p{i}": rng.dirichlet(np.ones(3), size=50) for i in range(4)}
    report._PROMPT_DATA.clear()
    report._INDICES.clear()
    cold = report.fairness_records(probs, ["a", "b", "c"], n_boot=200, seed=3)
    warm = report.fairness_records(probs, ["a", "b", "c"], n_boot=200, seed=3)  # served from the memo
    assert repr(cold) == repr(warm)
    d = report._prompt_data("p0", probs["p0"], probs["p0"].argmax(axis=1), 200, 3)
    fresh = report._compute_prompt_data("p0", probs["p0"], probs["p0"].argmax(axis=1), 200, 3)
    for name in ("soft", "hard", "soft_boot", "hard_boot", "labels", "idx"):
        assert np.array_equal(getattr(d, name), getattr(fresh, name))
        with pytest.raises(ValueError):
            getattr(d, name)[0] = 0
    # another seed, another prompt id or other probabilities are other entries
    assert report._prompt_data("p0", probs["p0"], probs["p0"].argmax(axis=1), 200, 4) is not d
    assert report._prompt_data("p1", probs["p0"], probs["p0"].argmax(axis=1), 200, 3) is not d
