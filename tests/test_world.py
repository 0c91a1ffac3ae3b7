"""The shipped world: loading, hash verification, the generator's quality bar and the build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.components import Components
from benchmark.errors import ModelLoadError
from benchmark.hashing import hash_file
from benchmark.sampling import sample
from benchmark.seeding import image_seeds
from benchmark.world import load_components, load_world, weights_dir
from benchmark.world.config import load_world_config
from benchmark.world.evaluate import bias_table, wilson
from classifiers.world import WorldClassifier

WEIGHTS = weights_dir()
MANIFEST = json.loads((WEIGHTS / "manifest.json").read_text())


@pytest.fixture(scope="module")
def world():
    return load_world()


def test_load_world_gives_everything_a_run_needs(world):
    assert isinstance(world.components, Components) and world.components.vae is None
    assert world.components.fingerprint and world.components.sampler.height == 8
    assert world.components.sampler.guidance_scale == MANIFEST["sampler"]["guidance_scale"]
    unet = world.components.unet
    assert unet.mid_block is not None and unet.config.cross_attention_dim == world.components.text_encoder.config.hidden_size
    data = world.method_data
    assert data.target.labels is not None and len(data.target) == 20000
    assert data.nontarget is not None and len(data.prompts) == len(world.prompts) == 14
    assert data.embedder is world.embedder
    assert len(world.reference) == 1000 and np.bincount(world.reference.labels["color"]).tolist() == [500, 500]
    feats = world.features(world.reference.images[:10])
    assert feats.shape == (10, 64) and np.isfinite(feats).all()
    mu, sigma = world.reference_stats
    assert mu.shape == (64,) and sigma.shape == (64, 64)
    assert np.allclose(mu, world.features(world.reference.images).mean(axis=0), atol=1e-3)
    assert set(world.truth) == {p.id for p in world.prompts}
    assert np.allclose(world.truth["zero"]["color"], [0.9, 0.1])
    assert world.manifest["files"]


def test_shipped_files_match_manifest_and_size_budget():
    for rel, meta in MANIFEST["files"].items():
        assert hash_file(WEIGHTS / rel) == meta["sha256"], rel
    assert MANIFEST["total_bytes"] <= 20_000_000
    assert MANIFEST["config_fingerprint"] == load_world_config().fingerprint()


def test_corrupt_or_missing_weights_raise_naming_the_file(tmp_path: Path):
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS, copy)
    target = copy / "generator" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="diffusion_pytorch_model.safetensors"):
        load_components(directory=copy)
    (copy / "clip.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="clip.safetensors"):
        load_world(directory=copy)
    with pytest.raises(ModelLoadError, match="world build"):
        load_world(directory=tmp_path / "empty")


def test_manifest_records_quality_bars():
    q = MANIFEST["quality"]
    assert MANIFEST["classifier"]["accuracy"]["color"] >= 0.98
    assert MANIFEST["classifier"]["accuracy"]["shade"] >= 0.98
    assert 0.75 <= MANIFEST["classifier_weak"]["accuracy"]["color"] <= 0.93
    table = q["bias_table"]
    assert table["n"] >= 200
    assert table["summary"]["color"]["spearman"] >= 0.8
    assert table["summary"]["shade"]["spearman"] >= 0.8
    assert table["summary"]["content_accuracy_mean"] >= 0.9
    assert {1.0, 2.0, 3.0, 5.0} <= {s["guidance_scale"] for s in q["guidance_sweep"]}


def test_generator_reproduces_opposite_biases_quickly(world):
    # "zero" is configured 90 % red and "one" 90 % blue: 48 images each already separate them.
    clf = WorldClassifier()
    shares = {}
    for prompt in ("zero", "one"):
        seeds = image_seeds(7, prompt, 48)
        images = sample(world.components, [f"a photo of a {prompt}"] * 48, seeds)
        probs = clf.predict(images)
        shares[prompt] = float((probs["color"].argmax(1) == 0).mean())
        assert (probs["digit"].argmax(1) == ["zero", "one"].index(prompt)).mean() >= 0.8
    assert shares["zero"] > 0.7 and shares["one"] < 0.3, shares


def test_sampling_is_reproducible(world):
    a = sample(world.components, ["a photo of a seven"] * 2, [1, 2])
    b = sample(world.components, ["a photo of a seven", "a photo of a two"], [1, 3])
    assert a.shape == (2, 8, 8, 3) and np.array_equal(a[0], b[0])


def test_wilson_interval():
    lo, hi = wilson(160, 200)
    assert lo < 0.8 < hi and 0.73 < lo < 0.75 and 0.84 < hi < 0.86


@pytest.mark.slow
def test_bias_reproduction_200_images_per_prompt(world):
    """The full bar: per prompt 200 images at the default guidance scale."""
    table = bias_table(world.components, world.config, WorldClassifier(), n=200)
    s = table["summary"]
    for attr in ("color", "shade"):
        assert s[attr]["spearman"] >= 0.8, s
        assert s[attr]["biased_ci_excludes_uniform"] >= 0.8, s
    assert s["content_accuracy_mean"] >= 0.9, s
    for row in table["rows"]:
        if row["named"] and row["configured"] == 1.0:
            assert row["measured"] >= 0.8, row


def test_tiny_build_runs_end_to_end(tmp_path: Path):
    from benchmark.world.build import main

    out = tmp_path / "w"
    assert main(["--budget", "tiny", "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["budget"] == "tiny" and "generator/unet/diffusion_pytorch_model.safetensors" in manifest["files"]
    assert manifest["quality"]["bias_table"]["rows"]
    small = load_world(directory=out)
    assert sample(small.components, ["a photo of a one"], [0]).shape == (1, 8, 8, 3)


def test_alternative_world_has_its_own_bias_and_generator_and_shares_clip(world):
    alt = load_world("alt")
    assert alt.components.fingerprint != world.components.fingerprint
    assert alt.embedder.fingerprint == world.embedder.fingerprint  # same images: the CLIP is shared
    assert not np.allclose(alt.truth["zero"]["color"], world.truth["zero"]["color"])
    summary = alt.manifest["quality"]["bias_table"]["summary"]
    assert alt.manifest["quality"]["bias_table"]["n"] >= 200
    assert summary["color"]["spearman"] >= 0.8 and summary["shade"]["spearman"] >= 0.8
    assert summary["content_accuracy_mean"] >= 0.9
    # Its prompts follow its own config: the conditional prompts name other digits.
    assert {p.id for p in alt.prompts} != {p.id for p in world.prompts}
