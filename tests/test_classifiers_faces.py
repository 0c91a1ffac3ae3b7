"""FairFace (ResNet-34, 18-way head) on a randomly initialised model, its safe weight loading, the
race7→race4 / age9→age3 mappings, and the MTCNN face cropper (weights ship in facenet-pytorch)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.errors import ModelLoadError
from classifiers import CLASSIFIERS
from classifiers.fairface import (
    AGE3,
    AGE9,
    RACE4,
    RACE7,
    FairFace,
    build_model,
    probabilities_from_logits,
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fairface") / "fairface.safetensors"
    save_file({k: v.contiguous() for k, v in build_model().state_dict().items()}, str(path))
    return path


def _images(n: int = 3, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _portrait() -> np.ndarray:
    """Grace Hopper's portrait, shipped in matplotlib's sample data: a real face, offline."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB").resize((256, 300)))


def test_random_fairface_shapes_and_rows_sum_to_one(weights) -> None:
    clf = FairFace(weights=weights, crop_faces=False, device="cpu")
    assert CLASSIFIERS.get("fairface") is FairFace
    probs = clf.predict(_images())
    expected = {"race7": 7, "gender": 2, "age9": 9, "race4": 4, "age3": 3, "race": 4, "age": 3}
    assert {a: p.shape for a, p in probs.items()} == {a: (3, k) for a, k in expected.items()}
    assert set(clf.attributes) == set(expected)
    for attr, p in probs.items():
        assert len(clf.attributes[attr]) == p.shape[1]
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    # the prompt sets' class names, so scoring can match them
    assert sorted(clf.attributes["race"]) == sorted(["white", "black", "asian", "indian"])
    assert sorted(clf.attributes["age"]) == sorted(["young", "adult", "old"])
    assert clf.attributes["gender"] == ["male", "female"]  # FairFace: index 7 Male, 8 Female
    assert clf.detect(_images()).all()  # no cropper: every image counts
    # the fingerprint follows the weights file and the cropping setting
    assert clf.fingerprint == FairFace(weights=weights, crop_faces=False, device="cpu").fingerprint


def test_fairface_preprocessing_is_imagenet_normalised_224(weights) -> None:
    """A constant image must reach the network as ((c/255) − mean) / std at 224×224."""
    clf = FairFace(weights=weights, crop_faces=False, device="cpu")
    seen = {}
    clf.model.conv1.register_forward_pre_hook(lambda m, inp: seen.update(x=inp[0]))
    clf.logits(np.full((1, 30, 50, 3), 128, dtype=np.uint8))
    x = seen["x"]
    assert tuple(x.shape) == (1, 3, 224, 224)
    expected = (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[0, :, 100, 100].numpy(), expected, rtol=1e-5)


def test_race4_and_age3_sum_the_mapped_fairface_classes() -> None:
    logits = np.full((2, 18), -50.0)
    # image 0: race mass split East Asian 0.3 / Southeast Asian 0.3 / Latino 0.4; age 10-19 and 60-69
    logits[0, [RACE7.index("east_asian"), RACE7.index("southeast_asian")]] = np.log(0.3)
    logits[0, RACE7.index("latino_hispanic")] = np.log(0.4)
    logits[0, 9 + AGE9.index("10-19")] = np.log(0.25)
    logits[0, 9 + AGE9.index("60-69")] = np.log(0.25)
    logits[0, 9 + AGE9.index("70+")] = np.log(0.5)
    # image 1: White 0.5, Indian 0.25, Middle Eastern 0.25; ages 0-2, 3-9, 50-59 equal
    logits[1, [RACE7.index("white")]] = np.log(0.5)
    logits[1, [RACE7.index("indian"), RACE7.index("middle_eastern")]] = np.log(0.25)
    logits[1, [9 + AGE9.index(a) for a in ("0-2", "3-9", "50-59")]] = 0.0
    logits[:, 7:9] = [[2.0, 0.0], [0.0, 0.0]]
    p = probabilities_from_logits(logits)
    races, ages = list(RACE4), list(AGE3)
    # Asian = East + Southeast Asian; Latino/Middle Eastern are left out and the rest renormalised
    np.testing.assert_allclose(p["race4"][0], np.eye(4)[races.index("asian")], atol=1e-12)
    np.testing.assert_allclose(p["race4"][1], [2 / 3, 0, 0, 1 / 3], atol=1e-12)
    assert races == ["white", "black", "asian", "indian"]
    # young = 0-19, adult = 20-59, old = 60+
    np.testing.assert_allclose(p["age3"][0], [0.25, 0.0, 0.75], atol=1e-12)
    np.testing.assert_allclose(p["age3"][1], [2 / 3, 1 / 3, 0.0], atol=1e-12)
    assert ages == ["young", "adult", "old"]
    np.testing.assert_allclose(p["gender"][0], [np.exp(2) / (1 + np.exp(2)), 1 / (1 + np.exp(2))])
    # all race mass on Latino/Middle Eastern (the rest underflowed): race4 is undefined → uniform, not NaN
    degenerate = np.full((1, 18), 0.0)
    degenerate[0, [RACE7.index("latino_hispanic"), RACE7.index("middle_eastern")]] = 800.0
    np.testing.assert_allclose(probabilities_from_logits(degenerate)["race4"], [[0.25] * 4])
    with pytest.raises(ValueError, match="18"):
        probabilities_from_logits(np.zeros((2, 17)))


def test_state_dict_pt_loads_with_weights_only_and_module_prefix(tmp_path, weights) -> None:
    from safetensors.torch import load_file

    state = {f"module.{k}": v for k, v in load_file(str(weights)).items()}
    torch.save({"state_dict": state}, tmp_path / "res34.pt")
    a = FairFace(weights=tmp_path / "res34.pt", crop_faces=False, device="cpu")
    b = FairFace(weights=weights, crop_faces=False, device="cpu")
    imgs = _images(2)
    np.testing.assert_allclose(a.logits(imgs), b.logits(imgs), rtol=1e-6)


class _Payload:
    """Unpickling this would create a file: a stand-in for code a hostile pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_arbitrary_pickle_is_refused_and_never_run(tmp_path) -> None:
    marker = tmp_path / "ran"
    torch.save({"fc.weight": torch.zeros(18, 512), "payload": _Payload(marker)}, tmp_path / "evil.pt")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"x": _Payload(marker)}))
    for name in ("evil.pt", "evil.pkl"):
        with pytest.raises(ModelLoadError, match="weights_only") as err:
            FairFace(weights=tmp_path / name, crop_faces=False)
        assert "\n" not in str(err.value) and name in str(err.value)
    assert not marker.exists(), "the pickle's payload ran"


@pytest.mark.parametrize("case, match", [
    ("missing", "not found"),
    ("corrupt-safetensors", "unreadable .safetensors"),
    ("corrupt-pt", "unreadable weights file"),
    ("wrong-keys", "not a FairFace ResNet-34 state dict"),
    ("wrong-shape", "wrong tensor shapes"),
    ("unset", "DEBIAS_BENCH_FAIRFACE_WEIGHTS"),
])
def test_bad_weights_give_one_line_model_load_error(tmp_path, weights, monkeypatch, case, match) -> None:
    from safetensors.torch import load_file, save_file

    monkeypatch.delenv("DEBIAS_BENCH_FAIRFACE_WEIGHTS", raising=False)
    path = tmp_path / "w.safetensors"
    if case == "corrupt-safetensors":
        path.write_bytes(weights.read_bytes()[:100])
    elif case == "corrupt-pt":
        path = tmp_path / "w.pt"
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif case == "wrong-keys":
        save_file({"conv.weight": torch.zeros(2, 2)}, str(path))
    elif case == "wrong-shape":
        state = load_file(str(weights))
        state["fc.weight"], state["fc.bias"] = torch.zeros(2, 512), torch.zeros(2)
        save_file(state, str(path))
    with pytest.raises(ModelLoadError, match=match) as err:
        FairFace(weights=None if case == "unset" else path, crop_faces=False)
    assert "\n" not in str(err.value)
    if case != "unset":
        assert str(path) in str(err.value)


def test_weights_from_env_var(weights, monkeypatch) -> None:
    monkeypatch.setenv("DEBIAS_BENCH_FAIRFACE_WEIGHTS", str(weights))
    monkeypatch.setenv("DEBIAS_BENCH_FACE_CROP", "0")
    clf = CLASSIFIERS.get("fairface")()  # how the runner builds it
    assert clf.cropper is None and clf.predict(_images(1))["race4"].shape == (1, 4)


# -- face detection / cropping (facenet-pytorch's MTCNN, weights in its wheel) ----------------------

def test_mtcnn_finds_the_face_and_marks_faceless_images(weights) -> None:
    pytest.importorskip("facenet_pytorch", reason="face cropping needs facenet-pytorch (extra `faces`)")
    from classifiers.faces import FaceCropper

    cropper = FaceCropper(device="cpu")
    portrait = _portrait()
    noise = np.random.default_rng(1).integers(0, 256, portrait.shape, dtype=np.uint8)
    flat = np.full(portrait.shape, 90, dtype=np.uint8)
    images = np.stack([portrait, noise, flat])
    crops, found = cropper.crop(images)
    assert found.tolist() == [True, False, False]
    assert crops.shape == (3, 224, 224, 3)
    # the face box lies inside the portrait's upper middle, and the crop is a widened square around it
    (x1, y1, x2, y2), = [b for b in cropper.boxes(portrait[None]) if b is not None]
    assert 40 < x1 < x2 < 216 and 20 < y1 < y2 < 220
    # images too small for MTCNN's pyramid count as faceless instead of crashing
    assert not cropper.crop(np.zeros((2, 16, 16, 3), dtype=np.uint8))[1].any()

    clf = FairFace(weights=weights, cropper=cropper, device="cpu")
    assert clf.detect(images).tolist() == [True, False, False]
    probs = clf.predict(images)  # faceless images are still classified (whole image), never dropped
    assert probs["gender"].shape == (3, 2)
    # cropping changes what the network sees, so it changes the cache fingerprint
    assert clf.fingerprint != FairFace(weights=weights, crop_faces=False, device="cpu").fingerprint


def test_cropper_without_facenet_is_a_clear_error(monkeypatch) -> None:
    import classifiers.faces as faces

    monkeypatch.setattr(faces, "mtcnn_available", lambda: False)
    with pytest.raises(ModelLoadError, match="facenet-pytorch") as err:
        faces.FaceCropper()
    assert "\n" not in str(err.value) and "DEBIAS_BENCH_FACE_CROP=0" in str(err.value)


def test_square_box_widens_by_margin() -> None:
    from classifiers.faces import square_box

    assert square_box(np.array([10.0, 20.0, 30.0, 60.0]), 0.25) == (-10, 10, 50, 70)  # side 40 × 1.5, centred on (20, 40)
