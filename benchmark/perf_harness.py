"""Every figure of the harness's own cost, side by side in one run (``debias-bench perf --harness``).

What a user of ``pytest --benchmark`` or the CI gate waits for besides generation: the CLI's start
(``--help``, ``--version``, ``list methods``), classify + score as a share of generation and the
throughput ratio (:func:`benchmark.perf.measure`), a warm re-score of the world suite (with
``--warm-cache``: a cache a finished world-suite run filled), ``report`` of the shipped world entry
(first with its figures drawn, then with them remembered), and ``leaderboard add`` of that entry into
an empty leaderboard. Each command runs in its own process, as a user runs it. The machine's load
average before and after is printed with the figures: numbers from a shared machine are not comparable.
Numbers, not a pass/fail.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORLD_ENTRY = ROOT / "leaderboard" / "entries" / "world-269a29737059"
SUITE = ROOT / "benchmark" / "world" / "suite.yaml"


def _seconds(args: list[str], repeats: int = 1, cwd: Path | None = None) -> float:
    """Median wall time of ``python -m benchmark ARGS`` in a fresh process; a failure is an error."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "benchmark", *args], capture_output=True, text=True, cwd=cwd)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise RuntimeError(f"`debias-bench {' '.join(args)}` failed: {last}")
    return round(statistics.median(times), 2)


def entry_bundle(entry: Path, out: Path) -> Path:
    """A leaderboard entry zipped back into the bundle it was added from (its manifest and files)."""
    manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in [*manifest["files"], "manifest.json"]:
            zf.write(entry / name, name)
    return out


def measure(warm_cache: Path | None = None, repeats: int = 2, entry: Path = WORLD_ENTRY) -> dict[str, Any]:
    from benchmark.perf import measure as throughput
    from benchmark.runner import machine_info

    info = machine_info()
    figures: dict[str, Any] = {"machine": info["cpu"], "cpus": info["cores"],
                               "load_before": [round(x, 2) for x in os.getloadavg()]}
    figures["cli_start_s"] = {name: _seconds(args, repeats=3) for name, args in
                              (("--help", ["--help"]), ("--version", ["--version"]), ("list methods", ["list", "methods"]))}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        run_dir = tmp_path / "entry"
        shutil.copytree(entry, run_dir)
        figures["report_s"] = {"figures drawn": _seconds(["report", str(run_dir)]),
                               "figures remembered": _seconds(["report", str(run_dir)])}
        bundle = entry_bundle(entry, tmp_path / "world.zip")
        adds = []
        for i in range(repeats):
            adds.append(_seconds(["leaderboard", "add", str(bundle), "--leaderboard", str(tmp_path / f"lb{i}")]))
        figures["leaderboard_add_s"] = round(statistics.median(adds), 2)
        if warm_cache is not None:
            figures["warm_rescore_s"] = _seconds(["run", str(SUITE), "--cache-dir", str(warm_cache), "--quiet",
                                                  "--output-dir", str(tmp_path / "results")], repeats=repeats)
    perf = throughput("world", 200, 100, repeats)
    figures["throughput_ratio"] = perf["throughput_ratio"]
    figures["classify_score_share"] = perf["classify_score_share_of_generation"]
    figures["bare_images_per_s"] = perf["bare_images_per_s"]
    figures["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return figures


GOALS = {"cli_start_s": "< 1 s each", "report_s": "<= 5 s", "leaderboard_add_s": "<= 5 s",
         "warm_rescore_s": "<= 15 s", "classify_score_share": "<= 0.05", "throughput_ratio": ">= 0.95"}


def table(figures: dict[str, Any]) -> str:
    lines = [f"machine: {figures['machine']}, {figures['cpus']} CPUs; load average before "
             f"{figures['load_before']}, after {figures['load_after']}", "", "| figure | value | goal |", "|---|---|---|"]
    for key, goal in GOALS.items():
        if key in figures:
            value = figures[key]
            shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
            lines.append(f"| {key} | {shown} | {goal} |")
    if "warm_rescore_s" not in figures:
        lines.append("| warm_rescore_s | not measured: give --warm-cache DIR (a world-suite run's cache) | <= 15 s |")
    return "\n".join(lines)


def report(args: Any) -> int:
    """``debias-bench perf --harness [--warm-cache DIR] [--repeats N] [--json FILE]``."""
    from benchmark.errors import ConfigError

    if args.warm_cache is not None and not Path(args.warm_cache).is_dir():
        raise ConfigError(f"perf: --warm-cache {args.warm_cache}: not a directory")
    figures = measure(args.warm_cache, repeats=args.repeats)
    print(table(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0
