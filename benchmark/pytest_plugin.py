"""``pytest --benchmark``: the benchmark suite as test items, one per method × prompt set.

Settings come from ``[tool.debias-bench]`` in the project's ``pyproject.toml``, or from the file given
with ``--benchmark-config`` (a TOML file with that table, or a run config YAML/TOML)::

    [tool.debias-bench]
    config = "benchmark/world/suite.yaml"     # the run config (methods, prompt sets, ...)
    baseline = "baselines/world"              # optional: a run directory to gate against
    tolerance = 0.01                          # optional: the gate's extra slack
    run_dir = "results/nightly"               # optional: check an existing run instead of running
    [tool.debias-bench.thresholds]
    fd = {max = 0.2}                          # every variant of FD, every attribute
    "fd/soft" = {max = 0.15}                  # one variant
    clip_t = {min = 20}

The run happens once per session (``benchmark.runner.run``, or a ``pytest_debias_bench_run`` hook
implementation in a conftest); each item then checks the set-level records of its method and prompt
set against the thresholds and, with a baseline, the gate's rule (:mod:`leaderboard.gate`). A failing
item prints the metric table, not a traceback. Without ``--benchmark`` the items are skipped.

Option names: ``--benchmark``, ``--benchmark-config`` and ``--benchmark-baseline`` (pytest-benchmark
owns the other ``--benchmark-*`` options; these three are not among them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomllib

from benchmark.errors import BenchError, ConfigError

SETTINGS_KEYS = {"config", "thresholds", "baseline", "tolerance", "run_dir"}
RUN_KEY = pytest.StashKey[dict[str, Any]]()


class _Hooks:
    @pytest.hookspec(firstresult=True)
    def pytest_debias_bench_run(self, run_config: Any, settings: Settings, pytestconfig: pytest.Config) -> Any:
        """Run the benchmark for ``run_config`` and return the run directory (first non-None wins)."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(_Hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("debias-bench", "debias-bench fairness benchmark")
    group.addoption("--benchmark", action="store_true", dest="debias_benchmark", default=False,
                    help="run the debias-bench suite (one item per method × prompt set) and check its thresholds")
    group.addoption("--benchmark-config", dest="debias_benchmark_config", metavar="PATH", default=None,
                    help="debias-bench settings (TOML with [tool.debias-bench]) or a run config (YAML/TOML)")
    group.addoption("--benchmark-baseline", dest="debias_benchmark_baseline", metavar="RUN_DIR", default=None,
                    help="debias-bench baseline run to gate against (overrides the settings' `baseline`)")


@dataclass
class Settings:
    """Resolved ``[tool.debias-bench]`` settings; paths are absolute."""

    source: Path
    config: Path | None = None
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    baseline: Path | None = None
    tolerance: float = 0.0
    run_dir: Path | None = None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def _settings_from_table(table: dict[str, Any], source: Path) -> Settings:
    unknown = sorted(set(table) - SETTINGS_KEYS)
    if unknown:
        raise ConfigError(f"{source}: tool.debias-bench.{unknown[0]}: unknown field; known: {', '.join(sorted(SETTINGS_KEYS))}")
    base = source.parent

    def path_of(key: str) -> Path | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: tool.debias-bench.{key}: expected a path string")
        return (base / value).resolve()

    tolerance = table.get("tolerance", 0.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(f"{source}: tool.debias-bench.tolerance: expected a number ≥ 0")
    return Settings(source, path_of("config"), _thresholds(table.get("thresholds", {}), source), path_of("baseline"),
                    float(tolerance), path_of("run_dir"))


def _thresholds(raw: Any, source: Path) -> dict[str, dict[str, float]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: tool.debias-bench.thresholds: expected a table of metric = {{min/max}}")
    out: dict[str, dict[str, float]] = {}
    for key, rule in raw.items():
        where = f"{source}: tool.debias-bench.thresholds.{key}"
        if not isinstance(rule, dict) or not rule or set(rule) - {"min", "max"}:
            raise ConfigError(f"{where}: expected {{min = x}} and/or {{max = y}}")
        for bound, value in rule.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{where}.{bound}: expected a finite number")
        out[str(key)] = {k: float(v) for k, v in rule.items()}
    return out


def resolve_settings(config: pytest.Config) -> Settings | None:
    """Settings from ``--benchmark-config`` or the rootdir's pyproject.toml; None when there are none."""
    given = config.getoption("debias_benchmark_config")
    settings: Settings | None = None
    pyproject = Path(config.rootpath) / "pyproject.toml"
    if pyproject.is_file():
        table = _read_toml(pyproject).get("tool", {}).get("debias-bench")
        if table is not None:
            settings = _settings_from_table(table, pyproject)
    if given:
        path = Path(given)
        if not path.is_absolute():
            path = Path(config.invocation_params.dir) / path
        if not path.is_file():
            raise ConfigError(f"{given}: --benchmark-config file not found")
        table = _read_toml(path).get("tool", {}).get("debias-bench") if path.suffix == ".toml" else None
        if table is not None:
            settings = _settings_from_table(table, path)
        else:  # a run config: keep thresholds and baseline from pyproject
            settings = settings or Settings(source=path)
            settings.config, settings.run_dir = path.resolve(), None
    baseline = config.getoption("debias_benchmark_baseline")
    if baseline and settings is not None:
        settings.baseline = (Path(config.invocation_params.dir) / baseline).resolve()
    return settings


def _load_run_config(settings: Settings) -> Any:
    from benchmark.config import load_config

    return load_config(settings.config)


def _cells(settings: Settings) -> list[tuple[str, str]]:
    """(method, prompt set) pairs: from the run config, or from an existing run's records."""
    if settings.run_dir is not None:
        from leaderboard.rundir import load_run

        records = load_run(settings.run_dir).results.get("metrics") or []
        return list(dict.fromkeys((str(r["method"]), str(r["prompt_set"])) for r in records))
    cfg = _load_run_config(settings)
    return [(m.key, ps) for m in cfg.methods for ps in cfg.prompt_sets]


class BenchmarkSuite(pytest.Collector):
    """The session-level collector that owns the benchmark items."""

    def collect(self) -> list[pytest.Item]:  # items are made by pytest_collection_modifyitems
        return []


class BenchmarkFailed(Exception):
    """Raised by an item with the full text to show (thresholds, gate table)."""


class BenchmarkItem(pytest.Item):
    """One method × prompt set of the benchmark suite."""

    def __init__(self, *, method: str, prompt_set: str, settings: Settings, error: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.method, self.prompt_set, self.settings, self.error = method, prompt_set, settings, error

    def runtest(self) -> None:
        if self.error:
            raise BenchError(self.error)
        run_dir = _session_run(self.config, self.settings)
        from leaderboard.rundir import load_run

        results = load_run(run_dir).results
        problems, table = check_cell(results, self.method, self.prompt_set, self.settings)
        if problems:
            head = f"debias-bench: {self.method} on {self.prompt_set}: {len(problems)} problem(s) in {run_dir}"
            raise BenchmarkFailed("\n".join([head, *[f"  - {p}" for p in problems], "", table]))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, BenchmarkFailed):
            return str(excinfo.value)
        if isinstance(excinfo.value, BenchError):
            return f"debias-bench: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        # Skip reports need a line number; the items come from the settings file, line 0 is honest.
        return self.path, 0, f"debias-bench: {self.method} on {self.prompt_set}"


def _session_run(config: pytest.Config, settings: Settings) -> Path:
    """Run the benchmark once per session; later items reuse the run directory (or its error)."""
    state = config.stash.setdefault(RUN_KEY, {})
    if "run_dir" not in state and "error" not in state:
        try:
            if settings.run_dir is not None:
                state["run_dir"] = settings.run_dir
            else:
                run_config = _load_run_config(settings)
                got = config.hook.pytest_debias_bench_run(run_config=run_config, settings=settings, pytestconfig=config)
                if got is None:
                    from benchmark.runner import run

                    got = run(run_config, progress=False)
                state["run_dir"] = Path(got)
        except BenchError as exc:
            state["error"] = str(exc)
    if "error" in state:
        raise BenchError(state["error"])
    return state["run_dir"]


def _rule_applies(key: str, rec: dict[str, Any]) -> bool:
    metric, _, variant = key.partition("/")
    return rec.get("metric") == metric and (not variant or rec.get("variant") == variant)


def check_cell(results: dict[str, Any], method: str, prompt_set: str, settings: Settings) -> tuple[list[str], str]:
    """Problems (thresholds, failures, gate) for one method × prompt set, and its metric table."""
    from leaderboard.gate import baseline_exists, compare_results
    from leaderboard.rundir import load_run

    records = [r for r in results.get("metrics") or []
               if r.get("method") == method and r.get("prompt_set") == prompt_set and r.get("prompt_id") is None]
    problems: list[str] = []
    for f in results.get("failures") or []:
        if f.get("method") == method and f.get("prompt_set") == prompt_set:
            problems.append(f"failed at {f.get('stage')} on prompt {f.get('prompt_id')}: {f.get('error')}")
    if not records:
        problems.append("no metric records for this method and prompt set")
    status: dict[int, str] = {}
    for key, rule in settings.thresholds.items():
        hits = [(i, r) for i, r in enumerate(records) if _rule_applies(key, r)]
        if not hits and records:
            problems.append(f"threshold {key}: no such metric in the results")
        for i, r in hits:
            v = r.get("value")
            bad = [f"{b} {x:g}" for b, x in rule.items() if v is None or (b == "max" and v > x) or (b == "min" and v < x)]
            where = f"{r['metric']}/{r.get('variant')}" + (f" {r['attribute']}" if r.get("attribute") else "")
            if bad:
                problems.append(f"{where} = {v:.4f} breaks threshold {', '.join(bad)}")
                status[i] = "FAIL " + ", ".join(bad)
            else:
                status.setdefault(i, "ok " + ", ".join(f"{b} {x:g}" for b, x in rule.items()))
    gate_text = ""
    if settings.baseline is not None:
        if baseline_exists(settings.baseline):
            gate = compare_results(results, load_run(settings.baseline).results, settings.tolerance,
                                   method=method, prompt_set=prompt_set)
            for c in gate.changes:
                if c.status in ("worse", "missing"):
                    attr = f" {c.field('attribute')}" if c.field("attribute") else ""
                    problems.append(f"{c.field('metric')}/{c.field('variant')}{attr} is {c.status} than the baseline "
                                    f"({_f(c.baseline)} → {_f(c.current)}, allowed ±{c.margin:.4f})")
            gate_text = f"\ngate against {settings.baseline}:\n{gate.table(only_moved=True)}\n{gate.summary()}"
        else:
            gate_text = f"\nfirst run: nothing to compare (no baseline at {settings.baseline})"
    return problems, metric_table(records, status) + gate_text


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def metric_table(records: list[dict[str, Any]], status: dict[int, str] | None = None) -> str:
    """The set-level records as a fixed-width table (the failure output)."""
    status = status or {}
    header = ["metric", "variant", "attribute", "value", "95% CI", "threshold"]
    rows = []
    for i, r in enumerate(records):
        ci = "-" if r.get("ci_low") is None else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        arrow = " ↑" if r.get("higher_is_better") else " ↓"
        rows.append([f"{r['metric']}{arrow}", str(r.get("variant") or "-"), str(r.get("attribute") or "-"),
                     _f(r.get("value")), ci, status.get(i, "")])
    widths = [max(len(h), *(len(x[j]) for x in rows)) if rows else len(h) for j, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    enabled = bool(config.getoption("debias_benchmark"))
    # A run narrowed to explicit paths or node ids does not list the suite unless asked to.
    if not enabled and config.args_source == pytest.Config.ArgsSource.ARGS:
        return
    try:
        settings = resolve_settings(config)
    except BenchError as exc:
        if not enabled:
            return
        settings, error = Settings(source=Path(config.rootpath)), str(exc)
    else:
        error = None
    if settings is None:
        if enabled:
            settings, error = Settings(source=Path(config.rootpath)), (
                "no [tool.debias-bench] table in pyproject.toml and no --benchmark-config given")
        else:
            return
    cells: list[tuple[str, str]] = []
    if error is None:
        try:
            cells = _cells(settings)
        except BenchError as exc:
            if not enabled:
                return
            error = str(exc)
    suite = BenchmarkSuite.from_parent(session, name="debias-bench", nodeid="debias-bench")
    if error is not None:
        cells = [("config", "settings")]
    new = []
    for method, ps in cells:
        item = BenchmarkItem.from_parent(suite, name=f"{method}[{ps}]", method=method, prompt_set=ps,
                                         settings=settings, error=error)
        if not enabled:
            item.add_marker(pytest.mark.skip(reason="debias-bench suite: pass --benchmark to run it"))
        new.append(item)
    items.extend(new)
