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


def test_an_entry_carries_its_submitters_label_and_code_onto_the_page(tiny_config, tmp_path: Path) -> None:
    """`submit --label --code`: the page names the entry by its label (not a hash run id) and shows the
    model, the code link and the creation date; markup or control characters in them are refused."""
    from benchmark.errors import BenchError

    run_dir = run(tiny_config, progress=False)
    with pytest.raises(BenchError, match="--label"):
        pack(run_dir, tmp_path / "bad.zip", label="<script>alert(1)</script>")
    with pytest.raises(BenchError, match="--code"):
        pack(run_dir, tmp_path / "bad.zip", code="https://example.org/\u202erepo")
    bundle = pack(run_dir, tmp_path / "run.zip", label="Baseline (tiny, lab X)", code="https://example.org/repo@abc123")
    entry = add_entry(bundle, tmp_path / "entries")
    info = json.loads((entry / "entry.json").read_text())
    assert info["label"] == "Baseline (tiny, lab X)" and info["code"] == "https://example.org/repo@abc123"
    page = build_leaderboard(tmp_path / "entries", tmp_path / "site").read_text()
    assert "Baseline (tiny, lab X)" in page and "https://example.org/repo@abc123" in page
    import re

    assert re.search(r'<th scope="row">model</th><td>tiny[^<]*</td>', page)
