"""Two processes under `accelerate launch` give the same results as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.runner import run


@pytest.mark.slow
def test_two_cpu_processes_match_one(tiny_config, tones_file, tmp_path: Path) -> None:
    single = json.loads((run(tiny_config, progress=False) / "results.json").read_text())
    out, cache = tmp_path / "dist-out", tmp_path / "dist-cache"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "benchmark",
           "run", "--profile", "tiny", "--methods", "baseline", "--prompt-sets", str(tones_file),
           "--classifiers", "palette", "--batch-size", "3", "--bootstrap", "50", "--quiet",
           "--output-dir", str(out), "--cache-dir", str(cache), "--run-id", single["run_id"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    double = json.loads((out / single["run_id"] / "results.json").read_text())
    assert double["metrics"] == single["metrics"]
    assert len(list(cache.rglob("*.png"))) == 16
