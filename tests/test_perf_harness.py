"""`debias-bench perf --harness` (benchmark.perf_harness): its parts, without running the minutes-long
measurement itself (a benchmark prints numbers; it is not a timed test)."""

from __future__ import annotations

import json
import zipfile

import pytest

from benchmark.cli import main
from benchmark.perf_harness import WORLD_ENTRY, _seconds, entry_bundle, table


def test_the_shipped_entry_zips_back_into_its_bundle(tmp_path) -> None:
    bundle = entry_bundle(WORLD_ENTRY, tmp_path / "world.zip")
    manifest = json.loads((WORLD_ENTRY / "manifest.json").read_text())
    with zipfile.ZipFile(bundle) as zf:
        assert set(zf.namelist()) == {*manifest["files"], "manifest.json"}
        assert zf.read("results.json") == (WORLD_ENTRY / "results.json").read_bytes()


def test_a_command_that_fails_is_an_error_not_a_time() -> None:
    assert _seconds(["--version"]) > 0
    with pytest.raises(RuntimeError, match="`debias-bench list nothing` failed"):
        _seconds(["list", "nothing"])


def test_the_table_shows_every_figure_with_its_goal_and_the_load() -> None:
    figures = {"machine": "x86_64", "cpus": 2, "load_before": [0.1, 0.2, 0.3], "load_after": [1.0, 0.5, 0.4],
               "cli_start_s": {"--help": 0.06}, "report_s": {"figures drawn": 9.1}, "leaderboard_add_s": 19.7,
               "throughput_ratio": 0.96, "classify_score_share": 0.056}
    text = table(figures)
    assert "load average before [0.1, 0.2, 0.3], after [1.0, 0.5, 0.4]" in text
    assert "| leaderboard_add_s | 19.7 | <= 5 s |" in text and "| cli_start_s | --help 0.06 | < 1 s each |" in text
    assert "warm_rescore_s | not measured: give --warm-cache DIR" in text


def test_a_missing_warm_cache_is_refused_before_any_work(tmp_path, capsys) -> None:
    assert main(["perf", "--harness", "--warm-cache", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: perf: --warm-cache")
