"""`debias-bench cleam-check`: CLEAM of one classifier against another's labels, with matrices from the
classifier's shipped calibration and from the run's own generated images, cross-fitted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cleam_check import check
from benchmark.cli import main

ENTRY = Path(__file__).resolve().parents[1] / "leaderboard" / "entries" / "world-269a29737059"


def _by(rows, attribute, variant):
    return {r.calibration: r for r in rows if r.attribute == attribute and r.variant == variant}


def _synthetic_run(tmp_path: Path, soft_confusion: np.ndarray) -> Path:
    """Two methods × two prompts of one content; the weak classifier's output is row C[label] of a fixed
    soft matrix, so its soft confusion on any images is C exactly and the correction is exact."""
    rng = np.random.default_rng(0)
    rows = []
    for method, red in (("baseline", 0.8), ("fair", 0.5)):
        for pid in ("p0", "p1"):
            labels = (rng.random(100) > red).astype(int)  # 0 red, 1 blue
            for i, y in enumerate(labels):
                rows.append({"method": method, "prompt_set": "s", "prompt_id": pid, "prompt": f"a photo of a {pid}",
                             "index": i, "strong/color/red": float(y == 0), "strong/color/blue": float(y == 1),
                             "weak/color/red": soft_confusion[y, 0], "weak/color/blue": soft_confusion[y, 1]})
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(rows).to_parquet(run / "predictions.parquet", index=False)
    results = {"config": {"baseline": "baseline"}, "metrics": [],
               "models": {"classifiers": {"weak": {"attributes": ["color"]}, "strong": {"attributes": ["color"]}}},
               "prompt_sets": {"s": {"classes": {"color": ["red", "blue"]},
                                     "prompts": [{"id": p, "text": f"a photo of a {p}", "named": {}} for p in ("p0", "p1")]}}}
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_a_weak_classifier_whose_errors_are_fixed_is_corrected_exactly_by_its_own_images(tmp_path: Path) -> None:
    run = _synthetic_run(tmp_path, np.array([[0.7, 0.3], [0.2, 0.8]]))
    soft = _by(check(run, "weak", "strong"), "color", "soft-cleam")
    assert set(soft) == {"baseline images", "own images"}  # no shipped records in this run
    for calibration in ("baseline images", "own images"):
        assert soft[calibration].cells == 4
        assert soft[calibration].error_corrected < 1e-12 < soft[calibration].error_uncorrected
        assert soft[calibration].closer == 4


def test_on_the_world_entry_own_images_correct_and_the_shipped_matrices_do_not() -> None:
    rows = check(ENTRY, "world-weak", "world")
    for attribute in ("color", "shade"):
        for variant in ("hard-cleam", "soft-cleam"):
            by = _by(rows, attribute, variant)
            assert by["own images"].cells == 60
            # the measured finding: matrices from the method's own images move most cells toward the
            # label and cut the error; those measured on renders (shipped) do not
            assert by["own images"].closer >= 0.7 * 60
            assert by["own images"].error_corrected < 0.65 * by["own images"].error_uncorrected
            assert by["shipped"].closer <= 0.6 * 60
            assert by["own images"].closer > by["baseline images"].closer


def test_cli_prints_the_table_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _synthetic_run(tmp_path, np.array([[0.9, 0.1], [0.3, 0.7]]))
    assert main(["cleam-check", str(run), "--weak", "weak", "--strong", "strong"]) == 0
    out = capsys.readouterr().out
    assert "own images" in out and "4 of 4" in out
    for args, message in (([str(tmp_path / "nowhere")], "run folder not found"),
                          ([str(run), "--weak", "nope", "--strong", "strong"], "no classifier 'nope'"),
                          ([str(tmp_path)], "not a run folder")):
        assert main(["cleam-check", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
