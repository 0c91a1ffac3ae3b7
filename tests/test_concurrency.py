"""Two runs at once on one cache directory (two processes released together after their imports).

Both runs are forked from one driver process (see DRIVER). The cache writes every entry through a unique temporary file and an atomic rename, and each
entry carries its sha256, so racing writers of the same entry leave one whole copy; the run
directory is written through a per-process staging folder. Afterwards the cache must hold only
whole, verified entries and no temporary files, and each run's results must equal a solo run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmark.cache import Cache
from benchmark.runner import EXECUTION_FIELDS

ROOT = Path(__file__).resolve().parent.parent

# The driver imports the harness once, then forks: a solo run first (its own cache), then two
# racers released together through a pipe. Forked children are separate processes with their own
# pids and file handles, as two `debias-bench run` would be, without paying the ~10 s import twice.
# The plain report writer stands in for the leaderboard page (matplotlib: 3 s a run, no cache).
DRIVER = """
import json, os, sys, time, traceback
from pathlib import Path
import benchmark.report, benchmark.tiny
from benchmark.cache import atomic_write
from benchmark.config import load_config
from benchmark.runner import run

def plain(run_dir):
    out = Path(run_dir) / "report.html"
    atomic_write(out, benchmark.report.plain_html(benchmark.report.load_results(Path(run_dir))).encode())
    return out

benchmark.report.write_report = plain
spec = json.loads(Path(sys.argv[1]).read_text())

def child(folder, gate=None):
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.chdir(folder)
        config = load_config(None, spec["config"])
        if gate is not None:
            os.read(gate, 2)
        start = time.time()
        run(config, progress=False)
        Path("window.json").write_text(json.dumps([start, time.time()]))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)

status = {"solo": os.waitpid(child(spec["solo"]), 0)[1]}
gate, release = os.pipe()
racers = [child(folder, gate) for folder in spec["racers"]]
os.write(release, b"go" * len(racers))
status["racers"] = [os.waitpid(pid, 0)[1] for pid in racers]
print(json.dumps(status))
"""

RUN_DEPENDENT = EXECUTION_FIELDS  # seconds, images this process generated (the other may have cached some), times


def _config(tones_file: Path) -> dict:
    return {"profile": "tiny", "methods": [{"name": "baseline"}], "prompt_sets": [str(tones_file)],
            "classifiers": ["palette"], "images_per_prompt": 3, "batch_size": 2, "metrics": {"bootstrap": 30},
            "output_dir": "results", "cache_dir": "cache"}


def _race(tmp_path: Path, folders: list[Path], config: dict) -> Path:
    """Run the solo run, then the two racers at once; returns the solo run directory."""
    solo = tmp_path / "solo"
    solo.mkdir()
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "spec.json").write_text(json.dumps({"config": config, "solo": str(solo),
                                                    "racers": [str(f) for f in folders]}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "spec.json")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == {"solo": 0, "racers": [0, 0]}, proc.stderr[-3000:]
    (solo_dir,) = list((solo / "results").iterdir())
    return solo_dir


def _overlapped(folders: list[Path]) -> None:
    """The two runs really ran at the same time (else the test proved nothing)."""
    (a0, a1), (b0, b1) = (json.loads((f / "window.json").read_text()) for f in folders)
    assert max(a0, b0) < min(a1, b1), "the runs did not overlap"


def _check_cache(cache_dir: Path, images: int, predictions: int) -> None:
    cache = Cache(cache_dir)
    leftovers = [str(p) for p in cache_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []
    pngs = sorted((cache_dir / "images").rglob("*.png"))
    assert len(pngs) == images and all(cache.get_image(p.stem) is not None for p in pngs)
    preds = sorted((cache_dir / "predictions").rglob("*.json"))
    assert len(preds) == predictions
    assert all(cache.get_predictions(p.parent.parent.name, p.stem) is not None for p in preds)
    assert cache.corrupt_entries == 0


def _same(run_dir: Path, solo_dir: Path) -> None:
    got, want = (json.loads((d / "results.json").read_text()) for d in (run_dir, solo_dir))
    assert {k: v for k, v in got.items() if k not in RUN_DEPENDENT} == {
        k: v for k, v in want.items() if k not in RUN_DEPENDENT}
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "predictions.parquet"),
                                  pd.read_parquet(solo_dir / "predictions.parquet"))
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == sorted(
        p.name for p in (solo_dir / "samples").iterdir())


def test_two_runs_sharing_one_cache_at_once(tmp_path: Path, tones_file: Path) -> None:
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
        (folder / "cache").symlink_to(shared)  # the same relative cache_dir, so the configs are identical
    solo = _race(tmp_path, folders, _config(tones_file))
    _overlapped(folders)
    _check_cache(shared, images=12, predictions=12)
    generated = []
    for folder in folders:
        (run_dir,) = list((folder / "results").iterdir())
        _same(run_dir, solo)
        generated.append(json.loads((run_dir / "results.json").read_text())["cost"]["baseline"]["generated"])
    print("images generated by the two runs (12 needed):", generated)


@pytest.mark.slow
def test_two_runs_sharing_cache_and_run_directory_at_once(tmp_path: Path, tones_file: Path) -> None:
    """Also one output folder: both write the same run directory (same config, same run id)."""
    shared = tmp_path / "shared"
    (shared / "cache").mkdir(parents=True)
    (shared / "results").mkdir()
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
        (folder / "cache").symlink_to(shared / "cache")
        (folder / "results").symlink_to(shared / "results")
    solo = _race(tmp_path, folders, _config(tones_file))
    _overlapped(folders)
    _check_cache(shared / "cache", images=12, predictions=12)
    (run_dir,) = list((shared / "results").iterdir())
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(".")], "staging or temporary files left"
    _same(run_dir, solo)
