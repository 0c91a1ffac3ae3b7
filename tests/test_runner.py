"""The loop end to end on the tiny profile (a random SD-architecture model with a VAE)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.runner import run
from methods.baseline import Baseline


@pytest.fixture
def counted(monkeypatch):
    """Counts images the baseline generates."""
    calls = {"images": 0}
    original = Baseline.generate

    def generate(self, prompts, seeds):
        calls["images"] += len(seeds)
        return original(self, prompts, seeds)

    monkeypatch.setattr(Baseline, "generate", generate)
    return calls


def test_end_to_end_writes_results_predictions_report(tiny_config, counted) -> None:
    run_dir = run(tiny_config, progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["schema_version"] == 1
    assert results["versions"]["torch"] and results["models"]["base"]["fingerprint"]
    assert results["failures"] == []
    frame = pd.read_parquet(run_dir / "predictions.parquet")
    assert len(frame) == 4 * 4 == counted["images"] - 1  # plus one cost probe (UNet evaluations per image)
    assert {"palette/tone/warm", "palette/tone/cool", "seed", "image_sha256"} <= set(frame.columns)
    np.testing.assert_allclose(frame["palette/tone/warm"] + frame["palette/tone/cool"], 1.0)
    # the per-image prediction entries, written in the background, are all on disk when run() returns
    entries = list((Path(tiny_config.cache_dir) / "predictions").rglob("*.json"))
    assert len(entries) == frame["image_sha256"].nunique() == 16
    metrics = pd.DataFrame(results["metrics"])
    set_fd = metrics[(metrics.metric == "fd") & (metrics.variant == "soft") & metrics.prompt_id.isna()]
    assert len(set_fd) == 1 and set_fd.iloc[0].ci_low <= set_fd.iloc[0].value <= set_fd.iloc[0].ci_high
    # the conditional prompts feed the group-conditioned SPD, not FD
    assert "group-conditioned" in set(metrics[metrics.metric == "spd"].variant)
    assert (run_dir / "report.html").read_text().count("<table") >= 1
    assert len(list((run_dir / "samples").glob("*.png"))) == 16


def test_second_run_recomputes_nothing_and_matches(tiny_config, counted) -> None:
    first = run(tiny_config, progress=False)
    before = json.loads((first / "results.json").read_text())
    generated = counted["images"]
    second = run(tiny_config, progress=False)
    after = json.loads((second / "results.json").read_text())
    assert counted["images"] == generated, "a cached image was generated again"
    assert first == second
    assert before["metrics"] == after["metrics"]


def test_a_rescore_reads_whole_cells_without_the_per_image_entries(tiny_config, counted) -> None:
    first = run(tiny_config, progress=False)
    metrics = json.loads((first / "results.json").read_text())["metrics"]
    cache = Path(tiny_config.cache_dir)
    shutil.rmtree(cache / "images")
    shutil.rmtree(cache / "predictions")
    counted["images"] = 0
    again = run(tiny_config, progress=False)
    assert counted["images"] <= 1  # at most the cost probe: every cell came from its one file
    assert json.loads((again / "results.json").read_text())["metrics"] == metrics
    assert not (cache / "images").exists() or not any((cache / "images").rglob("*.png"))


def test_resume_generates_only_missing_images(tiny_config, counted) -> None:
    first = run(tiny_config, progress=False)
    metrics = json.loads((first / "results.json").read_text())["metrics"]
    pngs = sorted((tiny_config_cache := __import__("pathlib").Path(tiny_config.cache_dir)).rglob("*.png"))
    pngs = [p for p in pngs if "samples" not in p.parts]
    for png in pngs[:5]:  # as if the run had been killed before these were written
        png.unlink()
        png.with_suffix(".json").unlink()
    shutil.rmtree(tiny_config_cache / "cells")  # a cell's file is written only once all its images are
    counted["images"] = 0
    again = run(tiny_config, progress=False)
    assert counted["images"] == 5
    assert json.loads((again / "results.json").read_text())["metrics"] == metrics
    assert tiny_config_cache.exists()


def test_nan_images_are_reported_not_scored(tiny_config, monkeypatch) -> None:
    from benchmark.errors import DataError

    original = Baseline.generate

    def broken(self, prompts, seeds):
        if prompts[0] == "a photo of a nurse":
            raise DataError("2 of 3 generated images contain NaN or Inf values")
        return original(self, prompts, seeds)

    monkeypatch.setattr(Baseline, "generate", broken)
    run_dir = run(tiny_config, progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["failures"] == [{"method": "baseline", "prompt_set": "tones", "prompt_id": "nurse",
                                    "stage": "generate", "error": "2 of 3 generated images contain NaN or Inf values"}]
    scored = {m["prompt_id"] for m in results["metrics"]}
    assert "nurse" not in scored and "doctor" in scored


def test_cost_counts_unet_evaluations_per_image(tiny_config, counted) -> None:
    """Baseline with CFG: two UNet evaluations per step; the count survives a warm cache."""
    run_dir = run(tiny_config, progress=False)
    results = json.loads((run_dir / "results.json").read_text())
    from benchmark.profiles import load_profile

    sampler = load_profile(tiny_config).components.sampler
    per_step = 2 if sampler.guidance_scale > 1 else 1
    assert results["cost"]["baseline"]["unet_evals_per_image"] == per_step * sampler.num_inference_steps
    records = [m for m in results["metrics"] if m["metric"] == "unet_evals"]
    assert {(m["variant"], m["value"]) for m in records} == {
        ("per-image", per_step * sampler.num_inference_steps), ("vs-baseline", 1.0)}
    generated = counted["images"]
    again = json.loads((run(tiny_config, progress=False) / "results.json").read_text())
    assert counted["images"] == generated  # the probe is not repeated either
    assert again["cost"]["baseline"]["unet_evals_per_image"] == results["cost"]["baseline"]["unet_evals_per_image"]
    # seconds per image and training time are those measured when the images and artefacts were made
    cold, warm = results["cost"]["baseline"], again["cost"]["baseline"]
    assert cold["generated"] == 16 and warm["generated"] == 0 and warm["timed_images"] == 16
    assert warm["seconds_per_image"] == pytest.approx(cold["seconds_per_image"], rel=1e-3) and cold["seconds_per_image"] > 0
    assert warm["train_seconds"] == cold["train_seconds"] is not None


def test_results_are_self_contained(tiny_config) -> None:
    """What a reader needs to recompute or judge the numbers is in results.json itself: each prompt
    set's target distribution, each classifier's confusion matrices, the creation time, and where each
    method's artefacts came from."""
    results = json.loads((run(tiny_config, progress=False) / "results.json").read_text())
    assert results["prompt_sets"]["tones"]["target"] == {"tone": [0.5, 0.5]}
    palette = results["models"]["classifiers"]["palette"]
    assert palette["confusion"] == {}  # the palette rule has none; the world classifiers' are written out
    assert results["created"].endswith("+00:00")
    assert results["execution"]["artefacts"] == {"baseline": "none"}
    assert set(results["execution"]["phase_seconds"]) == {"load", "prepare", "generate", "classify", "score"}
    assert results["execution"]["machine"]["cores"] >= 1


def test_spelled_out_defaults_give_the_same_run_id(tiny_config) -> None:
    """One configuration, one run id: writing a default out (images per prompt, a method parameter)
    does not make a second run directory; changing a value does."""
    from benchmark.config import load_config
    from benchmark.runner import default_run_id

    implicit = default_run_id(tiny_config)
    spelled = load_config(None, {**tiny_config.model_dump(), "images_per_prompt": 4,
                                 "methods": [{"name": "baseline", "params": {}}]})
    assert default_run_id(spelled) == implicit
    more = load_config(None, {**tiny_config.model_dump(), "images_per_prompt": 5})
    assert default_run_id(more) != implicit


def test_a_prompt_subset_keeps_the_methods_prepared_on_the_full_set(tiny_config) -> None:
    """--max-prompts evaluates fewer prompts with the artefacts prepared on all of them: the method data
    (and so every artefact key) is the full run's."""
    from benchmark.config import load_config
    from benchmark.runner import Runner
    from methods import METHODS

    full = Runner(tiny_config, progress=False)
    subset = Runner(load_config(None, {**tiny_config.model_dump(), "max_prompts": 1}), progress=False)
    assert len(subset.prompt_sets[0].prompts) == 1 < len(full.prompt_sets[0].prompts)
    assert subset.method_data().prompts == full.method_data().prompts
    selfdebias = METHODS.get("selfdebias")()  # reads the prompts
    assert subset.artefact_key(selfdebias, subset.components()) == full.artefact_key(selfdebias, full.components())


def test_a_dead_writers_staging_folder_is_removed_and_a_live_ones_kept(tiny_config) -> None:
    """A run killed while writing leaves .staging-<pid>-…; the next run removes it unless that
    process still lives."""
    from benchmark.runner import Runner

    run_dir = Runner(tiny_config, progress=False).run_dir()
    dead, live = run_dir / ".staging-999999999-0000", run_dir / ".staging-1-0000"
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "half-written.png").write_bytes(b"\x89PNG")
    run(tiny_config, progress=False)
    assert not dead.exists() and live.exists()


def test_the_baseline_is_the_one_the_config_names(tiny_config) -> None:
    """Paired deltas and cost ratios compare with the method the config calls its baseline, whatever
    its label; a named baseline that is not among the methods is refused before any work."""
    from benchmark.config import load_config
    from benchmark.errors import ConfigError

    two = [{"name": "baseline", "label": "plain"}, {"name": "baseline", "label": "again"}]
    config = load_config(None, {**tiny_config.model_dump(), "methods": two, "baseline": "plain"})
    metrics = pd.DataFrame(json.loads((run(config, progress=False) / "results.json").read_text())["metrics"])
    deltas = metrics[metrics["metric"] == "delta_fd"]
    assert set(deltas["method"]) == {"again"} and np.allclose(deltas["value"], 0.0)
    ratio = metrics[(metrics["metric"] == "unet_evals") & (metrics["variant"] == "vs-baseline")]
    assert set(ratio["value"]) == {1.0}
    unnamed = load_config(None, {**tiny_config.model_dump(), "methods": two})  # default "baseline": not listed
    assert "delta_fd" not in set(pd.DataFrame(json.loads((run(unnamed, progress=False) / "results.json")
                                                          .read_text())["metrics"])["metric"])
    with pytest.raises(ConfigError, match="baseline: 'nobody' is not one of the methods"):
        load_config(None, {**tiny_config.model_dump(), "methods": two, "baseline": "nobody"})


def test_a_dry_run_plans_without_writing(tiny_config, monkeypatch) -> None:
    """`run --dry-run`: the run id and folder, the work, and per method what preparation would do;
    nothing generated, trained or written. A trained method without artefacts is announced."""
    from pathlib import Path

    from benchmark.runner import Runner, default_run_id
    from methods import METHODS

    class Trains(Baseline):
        name = "trains"
        trains = True

    monkeypatch.setitem(METHODS._paths, "trains", "tests:Trains")
    monkeypatch.setitem(METHODS._loaded, "trains", Trains)
    config = tiny_config.model_copy(update={"methods": [*tiny_config.methods, type(tiny_config.methods[0])(name="trains")]})
    plan = Runner(config, progress=False).plan()
    assert default_run_id(config) in plan and "4 prompts x 4 images" in plan and "images: 32" in plan
    assert "baseline       nothing to train" in plan
    assert "trains         TRAINS: no prepared artefacts for key" in plan
    assert not Path(config.output_dir).exists() and not (Path(config.cache_dir) / "artefacts").exists()


def test_a_scheduler_override_changes_the_sampler_and_the_image_keys(tiny_config) -> None:
    """`sampler.scheduler` swaps the scheduler class on the model's own noise schedule; the base
    fingerprint (and so every image key) changes with it, and the default keeps the run id."""
    from benchmark.config import load_config
    from benchmark.runner import Runner, default_run_id

    swapped = load_config(None, {**tiny_config.model_dump(), "sampler": {"scheduler": "euler"}})
    plain, other = Runner(tiny_config, progress=False).components(), Runner(swapped, progress=False).components()
    assert type(other.scheduler).__name__ == "EulerDiscreteScheduler"
    assert other.scheduler.config.num_train_timesteps == plain.scheduler.config.num_train_timesteps
    assert other.fingerprint != plain.fingerprint and default_run_id(swapped) != default_run_id(tiny_config)
    spelled = load_config(None, {**tiny_config.model_dump(), "sampler": {"scheduler": None}})
    assert default_run_id(spelled) == default_run_id(tiny_config)


def test_a_failed_background_prediction_write_fails_the_run(tiny_config, monkeypatch) -> None:
    """Per-image prediction entries are written by a background thread; its error is not swallowed."""
    from benchmark.cache import Cache

    def broken(self, classifier_fingerprint, image_sha, payload):
        raise OSError("disk full")

    monkeypatch.setattr(Cache, "put_predictions", broken)
    with pytest.raises(OSError, match="disk full"):
        run(tiny_config, progress=False)
