"""Determinism: one config run twice from empty caches gives the same numbers, and results.json
records the version of every installed library that can change them.

(1 vs 2 accelerate processes: tests/test_distributed.py. A cached rerun: tests/test_runner.py.)
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from benchmark.runner import EXECUTION_FIELDS

# Import name -> distribution of every library whose version can move a number in results.json
# (pillow: PNG coding and resizing; tokenizers: the prompt's token ids).
NUMERIC_LIBRARIES = {"torch": "torch", "torchvision": "torchvision", "diffusers": "diffusers",
                     "transformers": "transformers", "tokenizers": "tokenizers", "numpy": "numpy",
                     "scipy": "scipy", "sklearn": "scikit-learn", "pandas": "pandas", "PIL": "pillow",
                     "safetensors": "safetensors", "open_clip": "open_clip_torch", "cleanfid": "clean-fid",
                     "peft": "peft", "accelerate": "accelerate"}


pytestmark = pytest.mark.usefixtures("one_thread")



def _run(tmp_path: Path, tones_file: Path, name: str) -> Path:
    from benchmark.config import load_config
    from benchmark.runner import run

    return run(load_config(None, {
        "profile": "tiny", "methods": [{"name": "baseline"}], "prompt_sets": [str(tones_file)],
        "classifiers": ["palette"], "images_per_prompt": 3, "batch_size": 2, "metrics": {"bootstrap": 30},
        "output_dir": str(tmp_path / name / "out"), "cache_dir": str(tmp_path / name / "cache"), "run_id": "r"}),
        progress=False)


def test_same_config_twice_from_empty_caches_gives_identical_numbers(tmp_path: Path, tones_file: Path,
                                                                      plain_report) -> None:
    first, second = (_run(tmp_path, tones_file, name) for name in ("one", "two"))
    a, b = (json.loads((d / "results.json").read_text()) for d in (first, second))
    assert a["cost"]["baseline"]["generated"] == b["cost"]["baseline"]["generated"] == 12  # nothing was cached
    assert a["metrics"] and a["metrics"] == b["metrics"]  # every value, CI and n, bit for bit
    # everything else too, but the folders (they differ by construction) and the execution (times)
    for r in (a, b):
        del r["config"]["output_dir"], r["config"]["cache_dir"]
    assert {k: v for k, v in a.items() if k not in EXECUTION_FIELDS} == {
        k: v for k, v in b.items() if k not in EXECUTION_FIELDS}
    pd.testing.assert_frame_equal(pd.read_parquet(first / "predictions.parquet"),
                                  pd.read_parquet(second / "predictions.parquet"))
    assert [p.read_bytes() for p in sorted((first / "samples").iterdir())] == [
        p.read_bytes() for p in sorted((second / "samples").iterdir())]


def test_results_record_the_version_of_every_numeric_library(tmp_path: Path, tones_file: Path,
                                                             plain_report) -> None:
    run_dir = _run(tmp_path, tones_file, "v")
    versions = json.loads((run_dir / "results.json").read_text())["versions"]
    for must in ("python", "debias-bench", "torch", "diffusers", "transformers", "numpy", "pillow"):
        assert versions.get(must) not in (None, "", "not installed"), must
    for dist in NUMERIC_LIBRARIES.values():
        assert dist in versions, f"{dist} is not recorded in results.json versions"
        try:
            installed = metadata.version(dist)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        assert versions[dist] == installed, dist
