"""Shared test set-up: offline, few threads, and a tiny prompt set for end-to-end runs."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

# Missing weights must fail in milliseconds, never wait on a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

TONES_YAML = """\
name: tones
description: tiny smoke set for the tiny profile
source: project-made
attributes: [tone]
classes: {tone: [warm, cool]}
images_per_prompt: 4
prompts:
  - {id: doctor, text: "a photo of a doctor"}
  - {id: nurse, text: "a photo of a nurse"}
  - {id: red-nurse, text: "a photo of a red nurse", named: {tone: warm}}
  - {id: blue-nurse, text: "a photo of a blue nurse", named: {tone: cool}}
"""


@pytest.fixture
def tones_file(tmp_path: Path) -> Path:
    path = tmp_path / "tones.yaml"
    path.write_text(TONES_YAML)
    return path


@pytest.fixture
def tiny_config(tmp_path: Path, tones_file: Path):
    """A RunConfig for the tiny profile: baseline, 4 prompts × 4 images, palette classifier."""
    from benchmark.config import load_config

    return load_config(None, {
        "profile": "tiny",
        "methods": [{"name": "baseline"}],
        "prompt_sets": [str(tones_file)],
        "classifiers": ["palette"],
        "batch_size": 3,
        "metrics": {"bootstrap": 50},
        "output_dir": str(tmp_path / "results"),
        "cache_dir": str(tmp_path / "cache"),
    })


@contextmanager
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine are 10x slower."""
    with _single_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """``one_thread`` for a whole module, so module-scoped fixtures (trained tiny methods) use it too."""
    with _single_thread():
        yield


@pytest.fixture
def plain_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain report writer instead of the leaderboard page (matplotlib: 3 s per tiny run)."""
    import benchmark.report
    from benchmark.cache import atomic_write

    def write(run_dir: Path) -> Path:
        out = Path(run_dir) / "report.html"
        atomic_write(out, benchmark.report.plain_html(benchmark.report.load_results(Path(run_dir))).encode())
        return out

    monkeypatch.setattr(benchmark.report, "write_report", write)
