"""A bundle that names a registered prompt set or classifier is checked against the registry, not
against what it declares: consistent forgeries (rewrite the target and the claimed FD together) fail."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmark.config import load_config
from benchmark.runner import run
from leaderboard.submission import SubmissionRejected, add_entry, pack


@pytest.fixture(scope="module")
def world_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    config = load_config(None, {"methods": [{"name": "baseline"}], "classifiers": ["world-weak"], "max_prompts": 12,
                                "images_per_prompt": 6, "metrics": {"bootstrap": 20},
                                "output_dir": str(root / "results"), "cache_dir": str(root / "cache")})
    return run(config, progress=False)


def _forged(world_run: Path, tmp_path: Path, change: Callable[[dict], None]) -> Path:
    forged = tmp_path / world_run.name
    shutil.copytree(world_run, forged)
    results = json.loads((forged / "results.json").read_text())
    change(results)
    (forged / "results.json").write_text(json.dumps(results))
    return forged


def test_a_faithful_world_bundle_is_accepted(world_run: Path, tmp_path: Path) -> None:
    assert add_entry(pack(world_run, tmp_path / "ok.zip"), tmp_path / "entries").name == world_run.name


def _rewrite_target(results: dict) -> None:
    results["prompt_sets"]["world"]["target"]["color"] = [0.9, 0.1]


def _rewrite_named(results: dict) -> None:
    for prompt in results["prompt_sets"]["world"]["prompts"]:
        prompt["named"] = {}


def _rewrite_confusion(results: dict) -> None:
    results["models"]["classifiers"]["world-weak"]["confusion"]["shade"] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def _rewrite_counts(results: dict) -> None:
    results["models"]["classifiers"]["world-weak"]["confusion_n"]["color"] = [10**9, 10**9]  # a matrix "exact"


def _rewrite_text(results: dict) -> None:
    results["prompt_sets"]["world"]["prompts"][0]["text"] = "a photo of something else"


def _other_classifier(results: dict) -> None:
    results["models"]["classifiers"]["world-weak"]["fingerprint"] = "c" * 64


@pytest.mark.parametrize("change, rule", [
    (_rewrite_target, "declared-target"), (_rewrite_named, "declared-prompts"),
    (_rewrite_confusion, "declared-confusion"), (_rewrite_counts, "declared-confusion"), (_rewrite_text, "declared-prompts"),
    (_other_classifier, "classifier-mismatch"),
])
def test_declarations_that_differ_from_the_registry_are_refused(world_run, tmp_path, change, rule) -> None:
    bundle = tmp_path / "forged.zip"
    forged = _forged(world_run, tmp_path, change)
    with pytest.raises(SubmissionRejected) as info:
        add_entry(_zip(forged, bundle), tmp_path / "entries")
    assert info.value.rule == rule


def _zip(run_dir: Path, out: Path) -> Path:
    """Pack without pack()'s own check (it would refuse the forgery before the leaderboard sees it)."""
    from hostile_bundles import good_files, write_zip

    return write_zip(out, good_files(run_dir))
