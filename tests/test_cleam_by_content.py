"""CLEAM with the confusion matrix of the prompt's content: chosen per prompt, carried into results.json
and the submission check, and measured against rendered known truths on the world."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.metrics.cleam import corrected_distribution, matrices_by_prompt
from benchmark.metrics.report import fairness_records

POOLED = np.array([[0.8, 0.2], [0.2, 0.8]])
SEVEN = np.array([[0.6, 0.4], [0.4, 0.6]])


def test_each_prompt_gets_its_contents_matrix_and_the_rest_the_pooled_one() -> None:
    texts = {"seven": "a photo of a seven", "red-seven": "a photo of a red seven", "two": "a photo of a two",
             "glyph": "a photo of a glyph"}
    chosen = matrices_by_prompt(texts, POOLED, {"seven": SEVEN, "two": POOLED * 0 + np.eye(2)})
    assert chosen["seven"] is not None and np.array_equal(chosen["seven"], SEVEN)
    assert np.array_equal(chosen["red-seven"], SEVEN) and np.array_equal(chosen["two"], np.eye(2))
    assert np.array_equal(chosen["glyph"], POOLED)
    assert matrices_by_prompt(texts, POOLED, {}) is POOLED


def test_a_per_prompt_matrix_corrects_that_prompts_shares_only() -> None:
    rng = np.random.default_rng(0)
    probs = {p: np.eye(2)[rng.integers(0, 2, 300)] * 0.9 + 0.05 for p in ("a", "b")}
    mixed = fairness_records(probs, ["red", "blue"], confusion={"a": SEVEN, "b": POOLED}, n_boot=0)
    pooled = fairness_records(probs, ["red", "blue"], confusion=POOLED, n_boot=0)

    def hard_cleam(recs, pid):
        return next(r["value"] for r in recs if r["prompt_id"] == pid and r["variant"] == "hard-cleam")

    assert hard_cleam(mixed, "b") == hard_cleam(pooled, "b")
    shares = np.bincount(probs["a"].argmax(1), minlength=2) / 300
    expected = np.linalg.norm(corrected_distribution(shares, SEVEN) - 0.5)
    assert hard_cleam(mixed, "a") == pytest.approx(expected) != hard_cleam(pooled, "a")


def test_a_missing_prompt_matrix_is_an_error() -> None:
    from benchmark.errors import DataError

    with pytest.raises(DataError, match="no matrix for prompts"):
        fairness_records({"a": np.full((4, 2), 0.5), "b": np.full((4, 2), 0.5)}, ["red", "blue"],
                         confusion={"a": POOLED}, n_boot=0)


def _world():
    try:
        from classifiers.world import WeakWorldClassifier, WorldClassifier

        return WorldClassifier(), WeakWorldClassifier()
    except Exception as exc:  # the world's weights are optional in a source checkout
        pytest.skip(f"world not available: {exc}")


def coverage_on_renders(replicates: int) -> dict[str, tuple[float, float]]:
    """Renders of one digit with chosen red shares (0.2, 0.35, 0.5, 0.65; held-out scans, seeds apart
    from the calibration set), 200 per set, classified by world-weak. Per matrix (none, pooled, the
    digit's own taken as exact, the digit's own with its sampling error propagated from the 150
    calibration renders per colour): coverage of the true colour FD by the hard(-cleam) interval, and
    mean |FD − truth|."""
    from benchmark.world.config import DIGITS, load_world_config
    from benchmark.world.data import _imageset

    _, weak = _world()
    config, n = load_world_config("default"), 200
    hits: dict[str, list[tuple[bool, float]]] = {"none": [], "pooled": [], "content": [], "propagated": []}
    for d in range(10):
        for p_red in (0.2, 0.35, 0.5, 0.65):
            for r in range(replicates):
                rng = np.random.default_rng([d, int(p_red * 100), r, 4242])
                colour = np.zeros(n, int)
                colour[: n - round(p_red * n)] = 1  # 0 = red
                rng.shuffle(colour)
                labels = {"content": np.full(n, d), "color": colour, "shade": rng.integers(0, 3, n)}
                images = _imageset("truth", labels, seed=config.seed + 1000 + 97 * d + r, split="heldout").images
                probs = weak.predict(images)["color"]
                truth = abs(p_red - 0.5) * np.sqrt(2)
                own = weak.confusion_by_content["color"][DIGITS[d]]
                for name, conf, counts in (("pooled", weak.confusion["color"], None), ("content", own, None),
                                           ("propagated", own, weak.confusion_n_by_content["color"][DIGITS[d]])):
                    recs = fairness_records({"p": probs}, ["red", "blue"], None, conf, n_boot=300, seed=r,
                                            confusion_n=counts)
                    for key, variant in ((name, "hard-cleam"), ("none", "hard")):
                        if key == "none" and name != "pooled":
                            continue
                        rec = next(x for x in recs if x["prompt_id"] == "p" and x["metric"] == "fd"
                                   and x["variant"] == variant)
                        hits[key].append((rec["ci_low"] - 1e-12 <= truth <= rec["ci_high"] + 1e-12,
                                          abs(rec["value"] - truth)))
    return {k: (float(np.mean([h for h, _ in v])), float(np.mean([e for _, e in v]))) for k, v in hits.items()}


def test_world_weak_per_content_cleam_covers_rendered_known_truths() -> None:
    """80 sets: the digit's own matrix covers the true FD in at least 90 % of them, more often than
    the pooled matrix, with a smaller error than no correction; propagating its sampling error keeps
    the point estimate and covers at least as often."""
    found = coverage_on_renders(2)
    assert found["content"][0] >= 0.9 and found["content"][0] > found["pooled"][0], found
    assert found["content"][1] < found["none"][1], found
    assert found["propagated"][0] >= found["content"][0] and found["propagated"][1] == found["content"][1], found


@pytest.mark.slow
def test_world_weak_per_content_cleam_coverage_table() -> None:
    """The 400-set table in docs/metrics.md (`pytest -m slow tests/test_cleam_by_content.py -s`)."""
    found = coverage_on_renders(10)
    for name, (coverage, error) in found.items():
        print(f"{name:8} coverage {coverage:.3f}  mean |FD error| {error:.4f}")
    assert found["content"][0] >= 0.93 and found["propagated"][0] >= found["content"][0], found


def test_results_carry_the_per_content_matrices_and_the_check_recomputes_with_them() -> None:
    """The shipped world entry was scored with per-content matrices: its results.json declares them,
    and the submission check (which recomputes every CLEAM record from the predictions with the
    registered classifier's matrices) accepts it; with the pooled matrices alone it would not."""
    import json
    from pathlib import Path

    import pandas as pd

    from leaderboard.submission import check_declarations, check_predictions, recompute_fairness

    _world()
    entry = Path(__file__).resolve().parents[1] / "leaderboard" / "entries" / "world-269a29737059"
    results = json.loads((entry / "results.json").read_text())
    weak = results["models"]["classifiers"]["world-weak"]
    assert set(weak["confusion_by_content"]["color"]) == {"zero", "one", "two", "three", "four", "five", "six",
                                                           "seven", "eight", "nine"}
    pred = pd.read_parquet(entry / "predictions.parquet")
    pred = pred[pred["prompt_id"].isin(["seven", "two"]) & (pred["method"] == "baseline")]
    check_declarations(results)
    groups = check_predictions(pred, results)
    claimed = {(r["prompt_id"], r["variant"]): r["value"] for r in results["metrics"]
               if r["method"] == "baseline" and r["classifier"] == "world-weak" and r["attribute"] == "color"
               and r["metric"] == "fd" and r["prompt_id"] in ("seven", "two")}
    again = {(r["prompt_id"], r["variant"]): r["value"] for r in recompute_fairness(results, pred, groups)
             if r["classifier"] == "world-weak" and r["attribute"] == "color" and r["metric"] == "fd"
             and r["prompt_id"] in ("seven", "two")}
    for key in (("seven", "hard-cleam"), ("seven", "soft-cleam"), ("two", "hard-cleam")):
        assert again[key] == pytest.approx(claimed[key], rel=1e-9)
    seven = pred[pred["prompt_id"] == "seven"][groups[("world-weak", "color")]].to_numpy()
    pooled = next(r["value"] for r in fairness_records({"seven": seven}, ["red", "blue"], None,
                                                       np.asarray(weak["confusion"]["color"]), n_boot=0)
                  if r["prompt_id"] == "seven" and r["variant"] == "hard-cleam")
    assert pooled != pytest.approx(claimed[("seven", "hard-cleam")], rel=1e-3)
