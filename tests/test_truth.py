"""Measured vs configured bias: the table a world run prints per prompt."""

from __future__ import annotations

import numpy as np

from benchmark.cell import Cell
from benchmark.config import load_config
from benchmark.report import truth_table
from benchmark.scoring import score_truth
from classifiers.base import Classifier
from prompts import load_prompt_set


class _Fixed(Classifier):
    name = "fixed"

    def __init__(self) -> None:
        super().__init__()
        self.attributes = {"tone": ["cool", "warm"]}  # the opposite order of the prompt set's classes

    def predict(self, images):
        raise AssertionError("not called")


def test_truth_rows_use_prompt_set_class_order_and_cover_the_mean(tones_file) -> None:
    ps = load_prompt_set(str(tones_file))
    config = load_config(None, {"metrics": {"bootstrap": 200}})
    rng = np.random.default_rng(0)
    warm = rng.permutation(np.r_[np.ones(320), np.zeros(80)])  # exactly 80 % warm, hard predictions
    cell = Cell("baseline", ps.name, "doctor", "a photo of a doctor", list(range(400)))
    cell.predictions = {"fixed": {"tone": np.stack([1 - warm, warm], 1)}}
    cell.has_subject = {"fixed": np.ones(400, bool)}
    truth = {"doctor": {"tone": np.array([0.8, 0.2])}}
    rows = score_truth([cell], [ps], {"fixed": _Fixed()}, truth, config)
    by_class = {r["class"]: r for r in rows}
    assert set(by_class) == {"warm", "cool"}
    assert abs(by_class["warm"]["measured"] - warm.mean()) < 1e-12
    assert by_class["warm"]["configured"] == 0.8 and by_class["cool"]["configured"] == 0.2
    lo, hi = by_class["warm"]["ci_low"], by_class["warm"]["ci_high"]
    assert lo < warm.mean() < hi and hi - lo < 0.1
    text = truth_table({"truth": rows})
    assert "doctor" in text and "yes" in text
    # Profiles without a known bias (real, tiny) give no table.
    assert score_truth([cell], [ps], {"fixed": _Fixed()}, None, config) == []
    assert truth_table({"truth": []}) == ""
