"""A warm re-score needs neither the generator nor a method's preparation: the world's generator loads on
first use (LazyComponents), a method prepared before is prepared again only when an image is missing (the
record in the cache's ``prepared/``), and every fingerprint, image key and number stays what it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmark.world as world_module
from benchmark.cache import CachedImageEncoder
from benchmark.components import Components, LazyComponents
from benchmark.config import load_config
from benchmark.runner import Runner
from methods.ddm import DDM


def _config(tmp_path: Path) -> object:
    return load_config(None, {"cache_dir": str(tmp_path / "cache"), "output_dir": str(tmp_path / "out"),
                              "methods": [{"name": "baseline"}, {"name": "ddm"}], "max_prompts": 1,
                              "images_per_prompt": 4, "metrics": {"bootstrap": 50}})


@pytest.fixture
def counts(monkeypatch):
    """Counts generator loads and DDM preparations."""
    seen = {"generator": 0, "ddm": 0}
    load, prepare = world_module.load_generator, DDM.prepare

    def counting_load(directory):
        seen["generator"] += 1
        return load(directory)

    def counting_prepare(self, *args, **kwargs):
        seen["ddm"] += 1
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(world_module, "load_generator", counting_load)
    monkeypatch.setattr(DDM, "prepare", counting_prepare)
    return seen


def _run(tmp_path: Path) -> tuple[Runner, dict]:
    runner = Runner(_config(tmp_path), progress=False)
    results = json.loads((runner.run() / "results.json").read_text())
    return runner, results


def test_a_warm_rescore_loads_no_generator_and_prepares_nothing(tmp_path, counts) -> None:
    first, cold = _run(tmp_path)
    assert counts["generator"] == 1 and counts["ddm"] == 1
    assert len(list((tmp_path / "cache" / "prepared").rglob("*.json"))) == 2  # baseline and ddm

    second, warm = _run(tmp_path)
    assert counts == {"generator": 1, "ddm": 1}, "a warm re-score loaded the generator or prepared a method"
    assert isinstance(second.profile.components, LazyComponents) and not second.profile.components.loaded
    assert not second.profile.embedder.loaded  # CLIP-T's text and image embeddings came from the cache
    assert "images" not in second.profile.reference.__dict__, "a warm re-score rendered the FID reference set"
    assert len(list((tmp_path / "cache" / "reference").glob("*.safetensors"))) == 1
    assert warm["models"]["methods"] == cold["models"]["methods"]  # fingerprints, artefact hashes and keys
    assert warm["metrics"] == cold["metrics"]

    # one missing image: DDM is prepared (the generator loaded) for it, with the recorded fingerprint
    key = next(iter(sorted((tmp_path / "cache" / "images").rglob("*.png"))))
    shutil.rmtree(tmp_path / "cache" / "cells")
    for path in (key, key.with_suffix(".json")):
        path.unlink()
    third, again = _run(tmp_path)
    assert counts["generator"] == 2 and counts["ddm"] <= 2
    assert again["models"]["methods"] == cold["models"]["methods"]
    assert again["metrics"] == cold["metrics"]


def test_a_record_is_ignored_when_the_artefact_folder_changed(tmp_path, counts) -> None:
    _run(tmp_path)
    workdir = next((tmp_path / "cache" / "artefacts" / "ddm").iterdir())
    (workdir / "ddm.json").write_text((workdir / "ddm.json").read_text() + " ")  # any file of the folder
    _run(tmp_path)
    assert counts["ddm"] == 2, "a record was trusted although the artefact folder changed"


def test_lazy_components_load_once_and_replace_without_loading() -> None:
    loads = []

    unet, text = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

    def load():
        loads.append(1)
        return unet, text, "tok", "sched"

    lazy = LazyComponents(load, name="m", fingerprint="f")
    other = lazy.replace(fingerprint="g").to("cpu", torch.float64)  # applied once loaded
    assert isinstance(other, LazyComponents) and not loads and other.fingerprint == "g" and lazy.fingerprint == "f"
    assert lazy.tokenizer == "tok" and other.unet is unet and len(loads) == 1  # shared, loaded once
    assert unet.weight.dtype == text.weight.dtype == torch.float64
    swapped = other.replace(unet="u2")
    assert type(swapped) is Components and swapped.unet == "u2" and swapped.scheduler == "sched"


def test_cached_text_embeddings_equal_the_embedders(tmp_path) -> None:
    calls = []

    class Embedder:
        fingerprint = "e"

        def encode_texts(self, texts):
            calls.append(list(texts))
            return np.array([[len(t), ord(t[0]) / 7] for t in texts], dtype=np.float32)

        def encode_images(self, images):
            return np.zeros((len(images), 2), np.float32)

    texts = ["a photo of a zéro", "a photo of a one"]
    direct = Embedder().encode_texts(texts)
    first = CachedImageEncoder(Embedder(), tmp_path).encode_texts(texts)
    again = CachedImageEncoder(Embedder(), tmp_path).encode_texts(texts)
    assert np.array_equal(first, direct) and np.array_equal(again, direct) and first.dtype == direct.dtype
    assert len(calls) == 2  # the direct call and the first cached one; the second is read from disk
