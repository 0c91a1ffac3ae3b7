"""The world's renderer, config, data sets and prompts (no trained weights needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.errors import ConfigError, UnknownNameError
from benchmark.world.config import DIGITS, load_world_config
from benchmark.world.data import (
    caption,
    generator_captions,
    heldout_set,
    nontarget_set,
    quota,
    reference_set,
    training_labels,
    training_set,
    vocabulary,
)
from benchmark.world.prompts import world_prompts, world_truth
from benchmark.world.render import glyph_split, render


def _grey_level(images: np.ndarray) -> np.ndarray:
    """Mean brightness of each image's 16 least saturated pixels (the background)."""
    x = images.reshape(len(images), -1, 3).astype(float) / 255
    spread = x.max(axis=2) - x.min(axis=2)
    idx = np.argsort(spread, axis=1)[:, :16]
    return np.take_along_axis(x.mean(axis=2), idx, axis=1).mean(axis=1)


def _redness(images: np.ndarray) -> np.ndarray:
    """Red minus blue over each image's 16 most saturated pixels (the stroke)."""
    x = images.reshape(len(images), -1, 3).astype(float) / 255
    spread = x.max(axis=2) - x.min(axis=2)
    idx = np.argsort(-spread, axis=1)[:, :16]
    diff = x[..., 0] - x[..., 2]
    return np.take_along_axis(diff, idx, axis=1).mean(axis=1)


def test_render_is_deterministic_and_seeded():
    content, color, shade = np.arange(10), np.arange(10) % 2, np.arange(10) % 3
    a = render(content, color, shade, seed=5)
    b = render(content, color, shade, seed=5)
    c = render(content, color, shade, seed=6)
    assert a.dtype == np.uint8 and a.shape == (10, 8, 8, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_render_labels_are_visible():
    n = 600
    rng = np.random.default_rng(0)
    content, color, shade = rng.integers(0, 10, n), rng.integers(0, 2, n), rng.integers(0, 3, n)
    images = render(content, color, shade, seed=1)
    red = _redness(images)
    assert (red[color == 0] > 0.2).mean() > 0.99 and (red[color == 1] < -0.2).mean() > 0.99
    level = _grey_level(images)
    means = [level[shade == s].mean() for s in range(3)]
    assert means[0] > means[1] + 0.2 > means[2] + 0.4  # light > mid > dark


def test_render_varies_position_and_thickness():
    # The same glyph scan class drawn 200 times: the stroke's column and ink coverage vary.
    images = render(np.full(200, 1), np.zeros(200, int), np.full(200, 2), seed=2)
    x = images.astype(float) / 255
    saturation = x.max(axis=3) - x.min(axis=3)
    column = saturation.sum(axis=1).argmax(axis=1)
    assert len(set(column.tolist())) >= 3
    coverage = (saturation > 0.3).sum(axis=(1, 2))
    assert coverage.std() > 2


def test_render_rejects_bad_labels():
    with pytest.raises(ValueError):
        render(np.array([12]), np.array([0]), np.array([0]), seed=0)
    with pytest.raises(ValueError):
        render(np.array([1, 2]), np.array([0]), np.array([0, 1]), seed=0)


def test_heldout_glyphs_are_disjoint_from_training_glyphs():
    train, held = glyph_split("train"), glyph_split("heldout")
    for d in range(10):
        assert len(held[d]) > 20 and not set(train[d]) & set(held[d])


def test_quota_hits_configured_shares_exactly():
    rng = np.random.default_rng(0)
    labels = quota(1000, np.array([0.9, 0.1]), rng)
    assert np.bincount(labels).tolist() == [900, 100]
    assert np.bincount(quota(7, np.ones(3) / 3, rng)).sum() == 7


def test_training_set_has_the_configured_bias():
    config = load_world_config()
    labels = training_labels(config, seed=3, per_class=200)
    for d, name in enumerate(DIGITS):
        sel = labels["content"] == d
        for attr in ("color", "shade"):
            share = np.bincount(labels[attr][sel], minlength=len(config.attributes[attr])) / sel.sum()
            assert np.allclose(share, config.shares[name][attr], atol=1 / 200 + 1e-9)


def test_sets_shapes_and_captions():
    config = load_world_config()
    target = training_set(config, per_class=5)
    assert len(target) == 50 and target.captions[0] == "a photo of a zero" and target.labels is not None
    ref = reference_set(config, per_class=6)
    assert np.bincount(ref.labels["color"]).tolist() == [30, 30]
    held = heldout_set(config, per_class=3)
    assert len(held) == 30
    nt = nontarget_set(config, n=10)
    assert set(nt.captions) <= {"a photo of a square", "a photo of a ring"} and (nt.labels["color"] == -1).all()


def test_captions_use_only_the_vocabulary():
    vocab = set(vocabulary())
    rng = np.random.default_rng(0)
    labels = training_labels(load_world_config(), seed=0, per_class=10)
    caps = generator_captions(labels, rng)
    assert "" in caps and any("background" in c for c in caps) and any("red" in c for c in caps)
    for c in caps:
        assert set(c.split()) <= vocab
    assert caption(7, color=0, shade=2) == "a photo of a red seven on a dark background"


def test_config_validation_names_file_and_field(tmp_path: Path):
    text = (Path(load_world_config().path)).read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("zero:  {color: [0.90, 0.10]", "zero:  {color: [0.90, 0.20]"))
    with pytest.raises(ConfigError, match=r"bad.yaml: classes.zero.color"):
        load_world_config(bad)
    with pytest.raises(UnknownNameError):
        load_world_config("nope")
    alt = load_world_config("alt")
    assert alt.fingerprint() != load_world_config().fingerprint()


@pytest.mark.parametrize("variant,name", [("default", "world"), ("alt", "world_alt")])
def test_prompt_yaml_matches_world_prompts(variant: str, name: str):
    from prompts import load_prompt_set

    config = load_world_config(variant)
    ps = load_prompt_set(name)
    code = world_prompts(config)
    assert [(p.id, p.text, dict(p.named)) for p in ps.prompts] == [(p.id, p.text, p.named) for p in code]
    assert ps.attributes == list(config.attributes)
    truth = world_truth(config)
    for p in code:
        for attr, value in p.named.items():
            assert truth[p.id][attr][config.attributes[attr].index(value)] == 1.0
    assert np.allclose(truth["zero"]["color"], config.shares["zero"]["color"])
