"""The regression gate: worse beyond CI + tolerance fails, noise within the CI passes, first run passes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from leaderboard_runs import make_run

from benchmark.errors import BenchError
from leaderboard import cli
from leaderboard.gate import classify, compare_results, compare_runs, half_width


def _rec(value: float, lo: float | None, hi: float | None, higher: bool = False, metric: str = "fd") -> dict:
    return {"method": "m", "prompt_set": "world", "prompt_id": None, "classifier": "world", "attribute": "color",
            "metric": metric, "variant": "soft", "value": value, "ci_low": lo, "ci_high": hi, "n": 10,
            "higher_is_better": higher}


def _gate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gate", *argv])
    return args.func(args)


@pytest.mark.parametrize(
    ("base", "cur", "tol", "status"),
    [
        (_rec(0.10, 0.08, 0.12), _rec(0.13, 0.11, 0.15), 0.0, "unchanged"),  # moved 0.03, margin 0.02 + 0.02
        (_rec(0.10, 0.08, 0.12), _rec(0.20, 0.18, 0.22), 0.0, "worse"),  # moved 0.10 > 0.04
        (_rec(0.10, 0.08, 0.12), _rec(0.20, 0.18, 0.22), 0.07, "unchanged"),  # tolerance absorbs it
        (_rec(0.30, 0.29, 0.31), _rec(0.10, 0.09, 0.11), 0.0, "better"),
        (_rec(4.5258, None, None), _rec(4.5258 + 1e-12, None, None), 0.0, "unchanged"),  # no CI: a faithful rerun
        (_rec(4.0, None, None), _rec(4.19, None, None), 0.0, "unchanged"),  # no CI: within 5 % of the baseline
        (_rec(4.0, None, None), _rec(4.21, None, None), 0.0, "worse"),  # no CI: beyond 5 %
        (_rec(0.90, 0.85, 0.95, higher=True), _rec(0.70, 0.65, 0.75, higher=True), 0.0, "worse"),  # entropy fell
        (_rec(0.70, 0.65, 0.75, higher=True), _rec(0.90, 0.85, 0.95, higher=True), 0.0, "better"),
    ],
)
def test_classify_rule(base: dict, cur: dict, tol: float, status: str) -> None:
    assert classify(base, cur, tol)[0] == status


def test_half_width() -> None:
    assert half_width(_rec(0.1, 0.08, 0.14)) == pytest.approx(0.03)
    assert half_width(_rec(0.1, None, None)) == 0.0


def test_missing_metric_fails_and_timing_is_not_gated() -> None:
    base = {"metrics": [_rec(0.1, 0.09, 0.11), _rec(1.0, None, None, metric="seconds_per_image"),
                        {**_rec(0.5, 0.4, 0.6), "metric": "spd"}]}
    cur = {"metrics": [_rec(0.1, 0.09, 0.11), _rec(9.0, None, None, metric="seconds_per_image"),
                       {**_rec(0.1, 0.0, 0.2), "metric": "kl"}]}
    result = compare_results(cur, base)
    statuses = {c.field("metric"): c.status for c in result.changes}
    assert statuses == {"fd": "unchanged", "seconds_per_image": "not gated", "spd": "missing", "kl": "new"}
    assert result.failed
    assert "gate FAIL: 1 missing" in result.summary()
    with pytest.raises(BenchError, match="tolerance"):
        compare_results(cur, base, tolerance=-1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gate")
    return {
        "base": make_run(root, "base", methods={"baseline": 0.3, "ddm": 0.02}, n=40, n_boot=100, seed=0),
        # Same method behaviour, new random draws: every difference is sampling noise.
        "noise": make_run(root, "noise", methods={"baseline": 0.3, "ddm": 0.02}, n=40, n_boot=100, seed=1),
        # ddm lost its debiasing: colour leans as far as the baseline.
        "degraded": make_run(root, "degraded", methods={"baseline": 0.3, "ddm": 0.3}, n=40, n_boot=100, seed=2),
    }


def test_noise_passes_and_degradation_fails(runs: dict[str, Path]) -> None:
    noise = compare_runs(runs["noise"], runs["base"])
    assert not noise.failed, noise.table(only_moved=True)
    degraded = compare_runs(runs["degraded"], runs["base"])
    worse = [c for c in degraded.changes if c.status == "worse"]
    assert worse and {c.field("method") for c in worse} == {"ddm"}
    assert any(c.field("metric") == "fd" and c.field("attribute") == "color" for c in worse)


def test_gate_command_output_and_exit_codes(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _gate([str(runs["base"]), "--baseline", str(runs["base"])]) == 0
    faithful = capsys.readouterr().out
    assert faithful.startswith("gate pass:") and "status" not in faithful  # nothing moved: no table
    assert _gate([str(runs["degraded"]), "--baseline", str(runs["base"]), "--json", str(tmp_path / "gate.json")]) == 1
    out = capsys.readouterr().out
    first = out.splitlines()[0].split()
    assert first[:5] == ["status", "method", "prompt", "set", "classifier"]
    worse_lines = [line for line in out.splitlines() if line.startswith("worse")]
    assert worse_lines and all(" ddm " in line for line in worse_lines)
    assert any(" synthclf " in line for line in worse_lines)  # fairness rows name their classifier
    assert not any(line.startswith("unchanged") for line in out.splitlines())  # by default only what moved
    assert "gate FAIL:" in out
    full = json.loads((tmp_path / "gate.json").read_text())
    assert full["passed"] is False and len(full["changes"]) == full["counts"]["unchanged"] + sum(
        v for k, v in full["counts"].items() if k != "unchanged")
    assert "synthclf" in {c["classifier"] for c in full["changes"]}
    assert _gate([str(runs["noise"]), "--baseline", str(runs["base"]), "--all"]) == 0
    assert "unchanged" in capsys.readouterr().out
    # A huge tolerance forgives the regression.
    assert _gate([str(runs["degraded"]), "--baseline", str(runs["base"]), "--tolerance", "10"]) == 0
    # First run: no baseline yet.
    assert _gate([str(runs["noise"]), "--baseline", str(tmp_path / "none")]) == 0
    assert "first run: nothing to compare" in capsys.readouterr().out
    with pytest.raises(BenchError, match="baseline not found"):
        _gate([str(runs["noise"]), "--baseline", str(tmp_path / "none"), "--require-baseline"])
    with pytest.raises(SystemExit):
        _gate([str(runs["noise"]), "--baseline", str(runs["base"]), "--tolerance", "nan"])


def test_gate_accepts_results_json_paths(runs: dict[str, Path]) -> None:
    result = compare_runs(runs["degraded"] / "results.json", runs["base"] / "results.json")
    assert result.failed
    text = json.dumps([c.status for c in result.changes])
    assert "worse" in text


def test_ci_example_commands_parse() -> None:
    import shlex

    import yaml

    from benchmark.cli import build_parser

    workflow = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs" / "ci-example.yml").read_text())
    commands = [step["run"] for step in workflow["jobs"]["world-suite"]["steps"] if "run" in step]
    bench = [shlex.split(c)[1:] for c in commands if c.startswith("debias-bench ")]
    assert [argv[0] for argv in bench] == ["run", "gate", "submit"]
    parser = build_parser()
    for argv in bench:
        assert callable(parser.parse_args(argv).func)
    assert any(c.startswith("pytest --benchmark --benchmark-baseline") for c in commands)
