"""Kill-and-resume driver for tests/test_faults.py (test helper; production code has no kill hooks).

    python tests/fault_driver.py SPEC.json REPORT.json

SPEC: ``{"config": {...}, "reference": DIR, "trials": DIR, "seed": S, "kill_points": K, "stages": [...]}``.

The driver imports the harness once, then works in forked children so each child starts like a
fresh process without paying the import again (about 10 s here; the tiny run itself takes ~3 s):

1. reference child: an uninterrupted run in REFERENCE that counts the calls reaching each kill
   stage;
2. K seeded kill points ``(stage, n, phase)`` drawn from those counts (:func:`pick_kill_points`);
3. per kill point, in a fresh TRIALS/<i>: a child that runs until the n-th call of ``stage``,
   where it SIGKILLs itself (no cleanup, no atexit, no flush: as ``kill -9`` or the OOM killer),
   then a second child that resumes the run with the same config in the same folders.

report.html is written by the plain writer (``benchmark.report.plain_html``) instead of the
leaderboard page: the page's matplotlib figures cost seconds per trial, and a report is a pure
function of results.json, rewritten on every run, so where it is killed matters, not how much it
draws.

Runs use relative ``output_dir``/``cache_dir``, each child chdir-ing into its own folder, so every
results.json carries the same config. The report lists counts, kill points and exit statuses; the
test compares the output files.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

STARTED = time.perf_counter()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

import benchmark.cache  # noqa: E402
import benchmark.report  # noqa: E402
import benchmark.runner  # noqa: E402
import benchmark.scoring  # noqa: E402
import benchmark.tiny  # noqa: E402, F401  (the tiny profile's diffusers imports, paid once here)
from benchmark.config import load_config  # noqa: E402
from classifiers.palette import PaletteClassifier  # noqa: E402
from methods.baseline import Baseline  # noqa: E402

torch.set_num_threads(1)

# stage -> pipeline part. "write:*" stages fire inside atomic_write (phase "torn": half the bytes
# in the temporary file, no rename; phase "after": the rename done, the next step not).
STAGES = {
    "generate": "generation",          # Baseline.generate, before a batch is sampled
    "write:images": "generation",      # a cached PNG or its sha256 sidecar
    "predict": "classification",       # PaletteClassifier.predict
    "write:predictions": "classification",  # a cached prediction entry
    "score": "scoring",                # benchmark.scoring.score
    "write:parquet": "writing",        # predictions.parquet into the staging folder
    "write:samples": "writing",        # a thumbnail into the staging folder
    "write:results": "writing",        # results.json into the staging folder
    "commit": "writing",               # a rename from the staging folder into the run directory
    "report": "writing",               # report.html, after results.json is in place
}
PHASED = {"write:images", "write:predictions", "write:samples", "write:results"}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _write_stage(path: Path) -> str | None:
    parts = set(path.parts)
    if "images" in parts:
        return "write:images"
    if "predictions" in parts:
        return "write:predictions"
    if "samples" in parts:
        return "write:samples"
    if path.name == "results.json":
        return "write:results"
    return None


def install(counts: dict[str, int], kill: dict | None) -> None:
    """Wrap each stage's function: count its calls and die at the kill point."""

    def hit(stage: str) -> None:
        counts[stage] = counts.get(stage, 0) + 1

    def due(stage: str, phase: str = "before") -> bool:
        return (kill is not None and kill["stage"] == stage and counts.get(stage) == kill["n"]
                and kill["phase"] == phase)

    def wrap(owner: object, name: str, stage: str) -> None:
        original = getattr(owner, name)

        def hooked(*args, **kwargs):
            hit(stage)
            if due(stage):
                _die()
            return original(*args, **kwargs)

        setattr(owner, name, hooked)

    wrap(Baseline, "generate", "generate")
    wrap(PaletteClassifier, "predict", "predict")
    wrap(benchmark.scoring, "score", "score")
    wrap(benchmark.report, "write_report", "report")

    original_write = benchmark.cache.atomic_write

    def atomic_write(path: Path, data: bytes) -> None:
        stage = _write_stage(Path(path))
        if stage is None:
            return original_write(path, data)
        hit(stage)
        if due(stage, "torn"):
            # what atomic_write has on disk when killed mid-write: a half-written temporary file
            tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.torn.tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            _die()
        original_write(path, data)
        if due(stage, "after"):
            _die()

    benchmark.cache.atomic_write = atomic_write
    benchmark.runner.atomic_write = atomic_write

    original_parquet = pd.DataFrame.to_parquet

    def to_parquet(self, path, *args, **kwargs):
        hit("write:parquet")
        if due("write:parquet"):
            Path(path).write_bytes(b"PAR1")  # a torn parquet file
            _die()
        return original_parquet(self, path, *args, **kwargs)

    pd.DataFrame.to_parquet = to_parquet

    original_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        committing = ".staging-" in str(src) and ".staging-" not in str(dst)
        if committing:
            hit("commit")
            if due("commit"):
                _die()
        return original_replace(src, dst, *args, **kwargs)

    benchmark.runner.os.replace = replace  # runner does `import os`; this patches os.replace itself


def plain_report(run_dir: Path) -> Path:
    out = Path(run_dir) / "report.html"
    html = benchmark.report.plain_html(benchmark.report.load_results(Path(run_dir)))
    benchmark.cache.atomic_write(out, html.encode())
    return out


def pick_kill_points(counts: dict[str, int], seed: int, k: int, stages: list[str]) -> list[dict]:
    """``k`` kill points cycling through ``stages`` (spread over generation, classification,
    scoring and writing), each with a seeded call number within that stage's count; write stages
    alternate between a torn temporary file and a finished rename."""
    rng = random.Random(seed)
    points = []
    phased = 0
    for i in range(k):
        stage = stages[i % len(stages)]
        phase = "before"
        if stage in PHASED:
            phase, phased = ("torn", "after")[phased % 2], phased + 1
        points.append({"stage": stage, "part": STAGES[stage], "n": rng.randint(1, counts[stage]), "phase": phase})
    return points


def child(folder: Path, config: dict, counts: dict[str, int] | None, kill: dict | None) -> int:
    """Fork; the child runs the config in ``folder`` and exits; returns the raw wait status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.chdir(folder)
            tally: dict[str, int] = {}
            if counts is not None or kill is not None:
                install(tally, kill)
            benchmark.runner.run(load_config(None, config), progress=False)
            if counts is not None:
                Path("counts.json").write_text(json.dumps(tally))
            code = 3 if kill is not None else 0  # 3: the kill point was never reached
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return f"exit {os.WEXITSTATUS(status)}"


def main(spec_path: str, report_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    benchmark.report.write_report = plain_report
    reference = Path(spec["reference"])
    report: dict = {"import_seconds": round(time.perf_counter() - STARTED, 1)}
    start = time.perf_counter()
    report["reference"] = describe(child(reference, spec["config"], {}, None))
    report["reference_seconds"] = round(time.perf_counter() - start, 1)
    counts = json.loads((reference / "counts.json").read_text())
    report["counts"] = counts
    points = pick_kill_points(counts, spec["seed"], spec["kill_points"], spec["stages"])
    report["trials"] = []
    for i, point in enumerate(points):
        folder = Path(spec["trials"]) / str(i)
        start = time.perf_counter()
        killed = describe(child(folder, spec["config"], None, point))
        leftovers = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                           if p.name.endswith(".tmp") or ".staging-" in str(p))
        resumed = describe(child(folder, spec["config"], None, None))
        report["trials"].append({**point, "folder": str(folder), "killed": killed, "resumed": resumed,
                                 "leftovers_after_kill": leftovers,
                                 "seconds": round(time.perf_counter() - start, 1)})
    Path(report_path).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
