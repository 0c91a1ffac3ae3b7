"""Shipped method artefacts: a prepared folder exported to a store seeds a fresh cache, so that a
run loads instead of training (benchmark/shipped.py, Runner.prepare)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import shipped
from benchmark.config import load_config
from benchmark.errors import ModelLoadError
from benchmark.hashing import hash_file
from benchmark.profiles import tiny_profile
from benchmark.runner import Runner
from benchmark.sampling import sample
from methods import METHODS
from methods.base import Method, MethodData


@dataclass
class TrainedParams:
    scale: float = 1.0


class Trained(Method):
    """A method whose preparation writes one tensor, counting how often it had to."""

    name = "trained"
    Params = TrainedParams
    trainings = 0

    def prepare(self, base, data: MethodData, workdir: Path) -> None:
        self.workdir, self.components = workdir, base
        if self.load_tensors("weights") is None:
            Trained.trainings += 1
            self.save_tensors("weights", {"scale": torch.tensor([self.params.scale])})

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        return sample(self.components, prompts, seeds)


@pytest.fixture
def trained(monkeypatch):
    monkeypatch.setitem(METHODS._paths, "trained", "test_shipped:Trained")
    monkeypatch.setitem(METHODS._loaded, "trained", Trained)
    monkeypatch.setattr(Trained, "trainings", 0)
    return Trained


def _runner(tiny_config, cache: Path, stores: list[Path] = (), params: dict | None = None) -> Runner:
    config = tiny_config.model_copy(update={"cache_dir": str(cache)})
    config = load_config(None, {**config.model_dump(), "methods": [{"name": "trained", "params": params or {}}]})
    profile = dataclasses.replace(tiny_profile(config), artefact_stores=list(stores))
    return Runner(config, profile=profile, progress=False)


def test_first_preparation_writes_a_manifest_with_hashes_and_training_time(tiny_config, trained, tmp_path) -> None:
    runner = _runner(tiny_config, tmp_path / "cache")
    folder = runner.prepare()["trained"]
    manifest = json.loads((folder / shipped.MANIFEST).read_text())
    assert trained.trainings == 1
    assert manifest["key"] == runner.artefact_key(Trained(), runner.components())
    assert manifest["files"]["weights.safetensors"] == hash_file(folder / "weights.safetensors")
    assert manifest["files"]["unet-evals.json"] == hash_file(folder / "unet-evals.json")
    assert manifest["train_seconds"] == runner.cost["trained"]["train_seconds"] > 0
    assert manifest["params"] == {"scale": 1.0} and manifest["versions"]["torch"]
    assert manifest["device"] == "cpu"  # artefacts made on a GPU say so


def test_exported_artefacts_let_a_fresh_cache_skip_training(tiny_config, trained, tmp_path) -> None:
    first = _runner(tiny_config, tmp_path / "cache")
    store = tmp_path / "store"
    exported = first.prepare(export_to=store)["trained"]
    assert exported.parent.parent == store and trained.trainings == 1

    second = _runner(tiny_config, tmp_path / "fresh-cache", stores=[store])
    second.prepare()
    assert trained.trainings == 1, "the shipped artefacts were not used"
    assert second.artefacts_source["trained"] == "shipped"
    assert second.method_info["trained"]["fingerprint"] == first.method_info["trained"]["fingerprint"]
    # the training time is the one measured when the artefacts were made, not this run's loading
    assert second.cost["trained"]["train_seconds"] == first.cost["trained"]["train_seconds"]


def test_a_store_for_other_parameters_is_not_used(tiny_config, trained, tmp_path) -> None:
    store = tmp_path / "store"
    _runner(tiny_config, tmp_path / "cache").prepare(export_to=store)
    other = _runner(tiny_config, tmp_path / "fresh-cache", stores=[store], params={"scale": 2.0})
    other.prepare()
    assert trained.trainings == 2 and other.artefacts_source["trained"] == "trained"


def test_a_corrupt_shipped_file_is_an_error_naming_it(tiny_config, trained, tmp_path) -> None:
    store = tmp_path / "store"
    folder = _runner(tiny_config, tmp_path / "cache").prepare(export_to=store)["trained"]
    (folder / "weights.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ModelLoadError, match=r"weights\.safetensors: sha256 does not match"):
        _runner(tiny_config, tmp_path / "fresh-cache", stores=[store]).prepare()


def test_export_refuses_a_folder_without_manifest(tmp_path) -> None:
    (tmp_path / "w").mkdir()
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        shipped.export(tmp_path / "w", tmp_path / "store", "ddm")


@pytest.mark.parametrize("variant", ["default", "alt"])
def test_world_suite_ships_every_methods_artefacts(variant: str) -> None:
    """`debias-bench run` on the world (either variant) trains nothing: every method of the suite,
    with its world defaults, has a shipped folder for exactly its key, and its files are intact.
    Changing a default (or the world) without re-exporting (`debias-bench prepare --export`) fails here."""
    _assert_every_method_is_shipped(Runner(load_config(None, {"variant": variant}), progress=False))


def _assert_every_method_is_shipped(runner: Runner) -> None:
    base = runner.components()
    for spec in runner.config.methods:
        method = METHODS.get(spec.name).from_config(spec.params)
        key = runner.artefact_key(method, base)
        folder = shipped.find(runner.profile.artefact_stores, spec.name, key)
        assert folder is not None, f"{runner.config.variant}: no shipped artefacts for {spec.name} (key {key[:16]})"
        manifest = shipped.read_manifest(folder)
        shipped.verify(folder, manifest)
        assert manifest["train_seconds"] is not None


def test_shipped_artefacts_do_not_depend_on_rendered_bytes(monkeypatch, tmp_path) -> None:
    """Another CPU may round the renderer's floats differently. With one pixel of every rendered set
    changed, the world's sets keep their fingerprints, every shipped folder is still found, and the
    trained methods load their artefacts instead of training (their training entry points raise)."""
    from benchmark.world import data as world_data
    from methods import ddm, invdiff

    clean = Runner(load_config(None, {}), progress=False).method_data()
    render = world_data.render

    def off_by_one(*args, **kwargs):
        images = render(*args, **kwargs).copy()
        images[0, 0, 0, 0] ^= 1
        return images

    monkeypatch.setattr(world_data, "render", off_by_one)
    runner = Runner(load_config(None, {"cache_dir": str(tmp_path), "methods": [{"name": "ddm"}, {"name": "invdiff"}]}),
                    progress=False)
    data = runner.method_data()
    for name in ("target", "nontarget"):
        assert getattr(data, name).content_hash() != getattr(clean, name).content_hash()  # the bytes did change
        assert getattr(data, name).fingerprint == getattr(clean, name).fingerprint
    _assert_every_method_is_shipped(runner)

    def no_training(*args, **kwargs):
        raise AssertionError("trained although shipped artefacts exist")

    monkeypatch.setattr(ddm.DDMTrainer, "train", no_training)
    monkeypatch.setattr(invdiff, "train_guide", no_training)
    monkeypatch.setattr(invdiff, "per_sample_losses", no_training)
    runner.prepare()
    assert runner.artefacts_source == {"ddm": "shipped", "invdiff": "shipped"}


def test_methods_are_prepared_on_every_prompt_that_leaves_the_attribute_open() -> None:
    """Prompts naming another attribute are scored on the debiased one, so per-prompt methods must be
    prepared on them; prompts naming the debiased attribute are not."""
    runner = Runner(load_config(None, {}), progress=False)
    prompts = runner.prompt_sets[0].prompts
    data = runner.method_data()
    assert data.attribute == "color"
    assert data.prompts == [p.text for p in prompts if "color" not in p.named]
    assert "a photo of a zero on a mid background" in data.prompts
    assert "a photo of a blue zero" not in data.prompts


def test_artefact_key_hashes_only_the_method_data_a_method_reads(tiny_config, trained, tmp_path) -> None:
    """New prompts re-key methods that read prompts, and only them (DDM never sees a prompt)."""
    runner = _runner(tiny_config, tmp_path / "cache")
    base = runner.components()
    ddm, selfdebias = METHODS.get("ddm")(), METHODS.get("selfdebias")()
    before = {m.name: runner.artefact_key(m, base) for m in (ddm, selfdebias)}
    original = runner.method_data

    def more_prompts() -> MethodData:
        data = original()
        data.prompts = [*data.prompts, "a prompt no one prepared"]
        return data

    runner.method_data = more_prompts
    after = {m.name: runner.artefact_key(m, base) for m in (ddm, selfdebias)}
    assert after["ddm"] == before["ddm"] and after["selfdebias"] != before["selfdebias"]
    with pytest.raises(ValueError, match="no field"):
        MethodData().fingerprint(["prompt"])


@pytest.mark.parametrize("name, sampling, training", [
    ("difflens", {"suppress_others": None, "ratio": 2.0, "edit_below_probability": 0.8}, {"sae_steps": 10}),
    ("selfdebias", {"lam": 1.0, "guidance_batch": 8}, {"epochs": 2}),
    ("ddm", None, {"alpha": 0.1}),
])
def test_artefact_key_hashes_only_the_parameters_training_reads(tiny_config, trained, tmp_path, name, sampling,
                                                                  training) -> None:
    """A sampling-time setting reuses the trained artefacts (the shipped ones included); a training
    setting re-keys them."""
    runner = _runner(tiny_config, tmp_path / "cache")
    base = runner.components()
    key = runner.artefact_key(METHODS.get(name)(), base)
    if sampling is not None:
        assert runner.artefact_key(METHODS.get(name).from_config(sampling), base) == key
    assert runner.artefact_key(METHODS.get(name).from_config(training), base) != key


def test_training_inside_a_run_is_announced_and_recorded(tiny_config, trained, tmp_path, capsys) -> None:
    """A run that has to train says so in one line before it starts (which method, why), and records
    where each method's artefacts came from."""
    first = _runner(tiny_config, tmp_path / "cache")
    first.prepare()
    err = capsys.readouterr().err
    assert "training trained: no prepared artefacts for key" in err and "no recorded training time" in err
    assert first.artefacts_source == {"trained": "trained"}
    again = _runner(tiny_config, tmp_path / "cache")
    again.prepare()
    assert again.artefacts_source == {"trained": "cached"} and "training" not in capsys.readouterr().err
