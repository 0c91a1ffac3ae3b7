"""End to end with the real runner: run → submit → leaderboard add → page; a degraded run fails the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.runner import run
from leaderboard.gate import compare_runs
from leaderboard.html import build_leaderboard
from leaderboard.submission import add_entry, pack, validate_bundle


@pytest.mark.slow
def test_runner_output_passes_the_submission_check(tiny_config, tmp_path: Path) -> None:
    run_dir = run(tiny_config, progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    bundle = pack(run_dir, tmp_path / "run.zip")
    assert validate_bundle(bundle)["run_id"] == results["run_id"]
    entry = add_entry(bundle, tmp_path / "entries")
    verified = json.loads((entry / "entry.json").read_text())["verified_metrics"]
    assert verified == sum(1 for r in results["metrics"] if r["classifier"])
    page = build_leaderboard(tmp_path / "entries", tmp_path / "site").read_text()
    assert ">baseline<" in page and "data:image/png;base64," in page
    # Gating a run against itself passes.
    assert not compare_runs(run_dir, run_dir).failed
