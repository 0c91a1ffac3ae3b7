"""The import layers: a core at the bottom that imports nothing above it, methods/classifiers/prompts
on the core alone, the harness and leaderboard on top, and no import cycle. Every import counts,
lazy ones inside functions too. The listed exceptions are the known debts; a new one fails here.
Method files hold their method only: diagnostics live in benchmark/diagnostics, comparisons in studies."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "methods", "classifiers", "prompts", "studies", "leaderboard")
CORE = {"benchmark", "benchmark.errors", "benchmark.hashing", "benchmark.registry", "benchmark.components",
        "benchmark.sampling", "benchmark.images", "benchmark.seeding", "benchmark.metrics", "benchmark.progress",
        "benchmark.yamlfile", "benchmark.hooks", "benchmark.embedding", "benchmark.counting", "benchmark.cache",
        "benchmark.cell", "benchmark.memory"}
PLUGINS = ("methods", "classifiers", "prompts", "studies")
# The harness's report, CLI and pytest plugin render through the leaderboard package (both on top).
ALLOWED = {
    ("benchmark.cli", "leaderboard"), ("benchmark.report", "leaderboard"), ("benchmark.pytest_plugin", "leaderboard"),
}


def _modules() -> dict[str, set[str]]:
    mods: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            deps = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    deps |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names}
            mods[name] = {d for d in deps if d.split(".")[0] in PACKAGES}
    known = set(mods)

    def resolve(dep: str) -> str:
        while dep not in known and "." in dep:
            dep = dep.rsplit(".", 1)[0]
        return dep

    return {m: {resolve(d) for d in deps} - {m} for m, deps in mods.items()}


def _in(module: str, group: set[str]) -> bool:
    """``module`` is one of ``group`` or inside one of its packages (a top-level package counts only itself)."""
    return any(module == g or ("." in g and module.startswith(g + ".")) for g in group)


def _allowed(module: str, dep: str) -> bool:
    return any(module == m and (dep == d or dep.startswith(d + ".")) for m, d in ALLOWED)


def test_the_core_imports_nothing_above_it() -> None:
    bad = {(m, d) for m, deps in _modules().items() if _in(m, CORE) for d in deps if not _in(d, CORE)}
    assert not bad, sorted(bad)


def test_methods_classifiers_and_prompts_stand_on_the_core_alone() -> None:
    bad = {(m, d) for m, deps in _modules().items() if m.split(".")[0] in PLUGINS for d in deps
           if not _in(d, CORE) and d.split(".")[0] != m.split(".")[0] and not _allowed(m, d)}
    assert not bad, sorted(bad)


def test_the_harness_does_not_reach_the_leaderboard_beyond_the_known_places() -> None:
    bad = {(m, d) for m, deps in _modules().items() if m.startswith("benchmark") for d in deps
           if d.startswith("leaderboard") and not _allowed(m, d)}
    assert not bad, sorted(bad)


def test_no_import_cycle() -> None:
    graph = _modules()
    seen: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            if nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            visit(start, [start])


def test_the_checks_can_fail() -> None:
    """The reader sees imports inside functions too (the lazy ones that hid the runner ↔ scoring cycle)."""
    graph = _modules()
    assert "benchmark.cell" in graph["benchmark.scoring"] and "benchmark.config" in graph["leaderboard.submission"]
