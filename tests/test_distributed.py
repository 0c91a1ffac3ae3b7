"""Two processes under `accelerate launch` give the same results as one."""

from __future__ import annotations

import hashlib
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


@pytest.mark.slow
def test_two_processes_match_one_at_sd15_shapes(tones_file, tmp_path: Path) -> None:
    """The same check on Stable Diffusion 1.5's published shapes (random weights, benchmark.full_shape):
    the baseline and DiffLens (prepared by rank 0, loaded by rank 1 from the shared cache) give the same
    image files and metrics under two processes as under one. About 5 minutes on 2 cores, 11 GB."""
    import yaml

    from benchmark.perf_real import PERF_BUDGETS

    models = os.environ.get("DEBIAS_BENCH_RANDOM_MODELS", str(tmp_path / "random-models"))
    config = tmp_path / "sd15.yaml"
    config.write_text(yaml.safe_dump({
        "profile": "real", "model": "sd15-random", "prompt_sets": [str(tones_file)], "classifiers": ["palette"],
        "methods": [{"name": "baseline"}, {"name": "difflens", "params": PERF_BUDGETS["difflens"]}],
        "images_per_prompt": 2, "max_prompts": 2, "batch_size": 2, "metrics": {"bootstrap": 50},
        "sampler": {"scheduler": "ddim", "num_inference_steps": 4, "height": 128, "width": 128}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEBIAS_BENCH_RANDOM_MODELS": models, "HF_HUB_OFFLINE": "1"}

    def run_with(prefix: list[str], name: str) -> tuple[dict, dict[str, str]]:
        out, cache = tmp_path / f"{name}-out", tmp_path / f"{name}-cache"
        cmd = [*prefix, "-m", "benchmark", "run", str(config), "--quiet", "--output-dir", str(out),
               "--cache-dir", str(cache), "--run-id", "sd15"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3000)
        assert done.returncode == 0, done.stderr[-3000:]
        images = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.rglob("*.png")}
        return json.loads((out / "sd15" / "results.json").read_text()), images

    single, single_images = run_with([sys.executable], "one")
    double, double_images = run_with([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes",
                                      "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
                                     "two")
    assert len(single_images) == 8 and double_images == single_images
    assert double["metrics"] == single["metrics"]
