"""World classifiers, the world CLIP zero-shot classifier and the open_clip embedder (shipped weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.embedding import OpenClipEmbedder
from benchmark.errors import ConfigError, DataError, ModelLoadError
from benchmark.hashing import hash_file
from benchmark.world import weights_dir
from benchmark.world.clip import CLIP_CONFIG
from benchmark.world.config import load_world_config
from benchmark.world.data import heldout_set
from classifiers import CLASSIFIERS
from classifiers.base import Classifier
from classifiers.clip_zeroshot import ClipZeroShot
from classifiers.world import WeakWorldClassifier, WorldClassifier

WEIGHTS = weights_dir()
MANIFEST = json.loads((WEIGHTS / "manifest.json").read_text())


@pytest.fixture(scope="module")
def heldout():
    # A fresh draw of held-out renders (other seeds than the build's), 600 images.
    return heldout_set(load_world_config(), per_class=60, seed_offset=1000)


def _accuracy(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    return {a: float((p.argmax(1) == (labels["content"] if a == "digit" else labels[a])).mean()) for a, p in probs.items()}


def test_world_classifier_loads_and_meets_its_bar(heldout):
    clf = CLASSIFIERS.get("world")()
    assert isinstance(clf, Classifier) and isinstance(clf, WorldClassifier)
    assert clf.attributes["color"] == ["red", "blue"] and clf.attributes["shade"] == ["light", "mid", "dark"]
    assert clf.fingerprint == hash_file(WEIGHTS / "classifier.safetensors")
    assert clf.fingerprint == MANIFEST["files"]["classifier.safetensors"]["sha256"]
    assert clf.confusion["color"].shape == (2, 2) and clf.confusion["shade"].shape == (3, 3)
    assert np.allclose(clf.confusion["shade"].sum(axis=1), 1) and "held-out" in clf.confusion_source
    probs = clf.predict(heldout.images)
    assert np.allclose(probs["color"].sum(axis=1), 1)
    acc = _accuracy(probs, heldout.labels)
    assert acc["color"] >= 0.98 and acc["shade"] >= 0.98, acc
    assert np.diag(clf.confusion["color"]).min() >= 0.97


def test_weak_classifier_is_weak_but_informative(heldout):
    clf = CLASSIFIERS.get("world-weak")()
    assert isinstance(clf, WeakWorldClassifier)
    assert clf.fingerprint == MANIFEST["files"]["classifier_weak.safetensors"]["sha256"]
    acc = _accuracy(clf.predict(heldout.images), heldout.labels)
    for attr in ("color", "shade"):
        assert 0.75 <= acc[attr] <= 0.93, acc
        # The stored confusion matrix describes the same errors (diagonal mean ~ accuracy).
        assert abs(np.diag(clf.confusion[attr]).mean() - acc[attr]) < 0.06


def test_classifier_errors_are_one_line(tmp_path: Path):
    bad = tmp_path / "classifier.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="classifier.safetensors"):
        WorldClassifier(bad)
    with pytest.raises(ModelLoadError, match="not found"):
        WorldClassifier(tmp_path / "missing.safetensors")
    with pytest.raises(DataError):
        WorldClassifier().predict(np.zeros((2, 8, 8, 3), np.float32))


def test_clip_zero_shot_on_the_world(heldout):
    clf = CLASSIFIERS.get("clip")()
    assert set(clf.attributes) == {"color", "shade", "digit"}
    probs = clf.predict(heldout.images)
    assert np.allclose(probs["shade"].sum(axis=1), 1)
    acc = _accuracy(probs, heldout.labels)
    assert acc["color"] >= 0.9 and acc["shade"] >= 0.9 and acc["digit"] >= 0.5, acc
    assert clf.embedder.fingerprint == MANIFEST["files"]["clip.safetensors"]["sha256"]


def test_clip_zero_shot_is_generic_over_open_clip_models():
    # The world CLIP architecture with random weights stands in for any open_clip model.
    templates = {"tone": {"warm": "a photo of a red glyph", "cool": "a photo of a blue glyph"}}
    clf = ClipZeroShot(model_config=CLIP_CONFIG, templates=templates)
    probs = clf.predict(np.zeros((3, 16, 16, 3), np.uint8))
    assert probs["tone"].shape == (3, 2) and np.allclose(probs["tone"].sum(axis=1), 1)
    with pytest.raises(ConfigError):
        ClipZeroShot(model_config=CLIP_CONFIG, templates={"tone": {"warm": "x"}})


def test_open_clip_embedder(tmp_path: Path):
    emb = OpenClipEmbedder(model_config=str(CLIP_CONFIG), checkpoint=str(WEIGHTS / "clip.safetensors"))
    assert emb.fingerprint == hash_file(WEIGHTS / "clip.safetensors")
    img = emb.encode_images(np.random.default_rng(0).integers(0, 255, (5, 24, 24, 3), dtype=np.uint8))
    txt = emb.encode_texts(["a photo of a seven", "a red glyph"])
    assert img.shape == (5, 64) and txt.shape == (2, 64) and img.dtype == np.float32
    assert np.allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    # Captions land next to matching images: a red seven is closer to "red" than to "blue".
    from benchmark.world.render import render

    red = emb.encode_images(render(np.full(20, 7), np.zeros(20, int), np.ones(20, int), seed=0))
    t = emb.encode_texts(["a red glyph", "a blue glyph"])
    assert (red @ t[0] > red @ t[1]).mean() > 0.9
    with pytest.raises(ModelLoadError):
        OpenClipEmbedder(model_config=str(CLIP_CONFIG), checkpoint=str(tmp_path / "none.safetensors"))
    with pytest.raises(ConfigError):
        OpenClipEmbedder(model="no-such-model")


def test_cleam_assumption_is_measured_and_fails_for_the_weak_classifier() -> None:
    """world-weak's held-out accuracy varies with the digit (0.59-0.98 on colour), so one confusion
    matrix cannot hold for every prompt; the strong classifier is right everywhere."""
    from benchmark.headline import cleam_warnings
    from classifiers.world import WeakWorldClassifier, WorldClassifier

    weak, strong = WeakWorldClassifier().cleam_assumption(), WorldClassifier().cleam_assumption()
    assert strong["holds"] and not weak["holds"]
    assert weak["accuracy_spread"]["color"] > 0.3 and weak["accuracy_spread"]["shade"] > 0.3
    results = {"models": {"classifiers": {"world": {"cleam_assumption": strong},
                                          "world-weak": {"cleam_assumption": weak}}}}
    [line] = cleam_warnings(results)
    assert line.startswith("classifier world-weak: accuracy varies across contents by color 0.38")


def test_the_clip_classifiers_world_defaults_are_the_world_clips() -> None:
    """classifiers.world keeps its own copy of the world CLIP's texts and files (so that classifiers
    import nothing from the harness): it must name what benchmark.world.clip trains and ships."""
    from benchmark.world.clip import CLIP_CONFIG, TEMPLATES
    from benchmark.world.features import CLIP_FILE
    from classifiers.world import CLIP_MODEL_CONFIG, CLIP_TEMPLATES, CLIP_WEIGHTS

    assert CLIP_TEMPLATES == TEMPLATES and CLIP_MODEL_CONFIG == CLIP_CONFIG and CLIP_WEIGHTS == CLIP_FILE


def test_the_stored_calibration_is_the_loaded_classifiers_and_needs_no_torch() -> None:
    """The submission check reads the registered matrices from the shipped files (classifiers.calibration)
    instead of building the network: they must be the ones the loaded classifier carries, and reading
    them must not import torch (it is what keeps `leaderboard add`'s main process light)."""
    import subprocess
    import sys

    from classifiers import CLASSIFIERS
    from classifiers.calibration import STORED, registered_calibration

    assert set(STORED) <= set(CLASSIFIERS.names())
    for name in STORED:
        stored, loaded = registered_calibration(name), CLASSIFIERS.get(name)()
        assert stored.fingerprint == loaded.fingerprint
        for kind in ("confusion", "soft_confusion", "confusion_n"):
            mine, theirs = getattr(stored, kind), getattr(loaded, kind)
            assert mine and set(mine) == set(theirs) and all(np.array_equal(mine[a], theirs[a]) for a in mine)
        for kind in ("confusion_by_content", "soft_confusion_by_content", "confusion_n_by_content"):
            mine, theirs = getattr(stored, kind), getattr(loaded, kind)
            assert set(mine) == set(theirs)
            assert all(np.array_equal(mine[a][g], theirs[a][g]) for a in mine for g in mine[a])
    code = ("import sys; from leaderboard.submission import _registered_confusion as r; "
            "from classifiers.calibration import registered_calibration as c; "
            "assert r('world-weak', c('world-weak').fingerprint)['confusion']; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
