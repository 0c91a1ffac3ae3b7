"""`pytest --benchmark`: items per method × prompt set, thresholds, the gate, skips, and pytest-benchmark."""

from __future__ import annotations

from pathlib import Path

# pytester's in-process runs drop the modules they import; importing these here keeps pandas/pyarrow
# (whose extension types cannot be registered twice) loaded once for the whole session.
import leaderboard_runs  # noqa: F401
import pandas  # noqa: F401
import pandas.core.arrays.arrow.extension_types  # noqa: F401  (imported lazily by to_parquet)
import pandas.io.parquet  # noqa: F401
import pyarrow.parquet  # noqa: F401
import pytest

import benchmark.config  # noqa: F401
import leaderboard.gate  # noqa: F401

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent
RUN_YAML = "methods: [{name: baseline}, {name: ddm}]\nprompt_sets: [world]\n"
CONFTEST = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(TESTS)!r})
from leaderboard_runs import make_run

HERE = Path(__file__).parent
LEAN = {{"baseline": 0.35, "ddm": 0.02}}


def pytest_debias_bench_run(run_config, settings, pytestconfig):
    with open(HERE / "calls.txt", "a") as f:
        f.write("run\\n")
    lean = dict(LEAN)
    if (HERE / "degrade").exists():
        lean["ddm"] = 0.35
    methods = {{m.key: lean[m.key] for m in run_config.methods}}
    return make_run(HERE / "results", "current", methods=methods, n=24, n_boot=50, seed=11, prompt_set="world")
"""


def _project(pytester: pytest.Pytester, settings: str) -> None:
    pytester.makefile(".yaml", run=RUN_YAML)
    pytester.makefile(".toml", pyproject=f"[tool.debias-bench]\nconfig = \"run.yaml\"\n{settings}")
    pytester.makeconftest(CONFTEST)


def test_items_are_skipped_without_the_flag(pytester: pytest.Pytester) -> None:
    _project(pytester, "")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*debias-bench suite: pass --benchmark to run it*"])
    assert not (pytester.path / "calls.txt").exists()


def test_thresholds_pass_and_fail_with_a_metric_table(pytester: pytest.Pytester) -> None:
    _project(pytester, '[tool.debias-bench.thresholds]\n"fd/soft" = {max = 0.2}\nentropy = {min = 0.5}\n')
    result = pytester.runpytest("--benchmark", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "debias-bench::baseline?world? FAILED*",
        "debias-bench::ddm?world? PASSED*",
        "*debias-bench: baseline on world: * problem(s)*",
        "*fd/soft color = 0.* breaks threshold max 0.2*",
        "*metric*variant*attribute*value*95% CI*threshold*",
        "*fd ↓*soft*color*FAIL max 0.2*",
    ])
    out = result.stdout.str()
    assert "Traceback" not in out and "def runtest" not in out and "raise BenchmarkFailed" not in out
    # One benchmark run serves every item.
    assert (pytester.path / "calls.txt").read_text() == "run\n"


def test_unknown_threshold_metric_fails(pytester: pytest.Pytester) -> None:
    _project(pytester, "[tool.debias-bench.thresholds]\nfdd = {max = 0.2}\n")
    result = pytester.runpytest("--benchmark")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*threshold fdd: no such metric in the results*"])


def test_gate_against_a_baseline(pytester: pytest.Pytester) -> None:
    _project(pytester, "")
    first = pytester.runpytest("--benchmark", "--benchmark-baseline", "baseline-run")
    first.assert_outcomes(passed=2)
    first.stdout.no_fnmatch_line("*FAILED*")
    (pytester.path / "results" / "current").rename(pytester.path / "baseline-run")
    (pytester.path / "degrade").touch()
    result = pytester.runpytest("--benchmark", "--benchmark-baseline", "baseline-run")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*debias-bench: ddm on world:*",
        "*fd/soft color is worse than the baseline*",
        "*gate against*baseline-run*",
        "*gate FAIL*",
    ])


def test_settings_file_on_the_command_line(pytester: pytest.Pytester) -> None:
    _project(pytester, "")
    pytester.makefile(".toml", strict='[tool.debias-bench]\nconfig = "run.yaml"\n[tool.debias-bench.thresholds]\nfd = {max = 0.01}\n')
    result = pytester.runpytest("--benchmark", "--benchmark-config", "strict.toml")
    result.assert_outcomes(failed=2)
    bad = pytester.makefile(".toml", broken='[tool.debias-bench]\nconfig = "run.yaml"\nthreshold = 1\n')
    result = pytester.runpytest("--benchmark", "--benchmark-config", str(bad))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*debias-bench: *broken.toml: tool.debias-bench.threshold: unknown field*"])
    assert "Traceback" not in result.stdout.str()


def test_coexists_with_pytest_benchmark(pytester: pytest.Pytester) -> None:
    _project(pytester, '[tool.debias-bench.thresholds]\n"fd/soft" = {max = 0.2}\n')
    pytester.makepyfile(test_speed="def test_speed(benchmark):\n    assert benchmark(sum, [1, 2, 3]) == 6\n")
    result = pytester.runpytest("--benchmark", "--benchmark-disable", "--benchmark-columns=min,max", "-v")
    result.assert_outcomes(passed=2, failed=1)
    # pluggy does not fix the order in which installed plugins are listed
    result.stdout.re_match_lines([r"plugins:.*(benchmark-.*debias-bench-|debias-bench-.*benchmark-)"])
    result.stdout.fnmatch_lines(["test_speed.py::test_speed PASSED*"])
    help_text = pytester.runpytest("--help").stdout.str()
    for option in ("--benchmark ", "--benchmark-config=PATH", "--benchmark-baseline=RUN_DIR", "--benchmark-disable",
                   "--benchmark-only"):
        assert option in help_text
