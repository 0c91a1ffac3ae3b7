"""The deepface classifier driven through the real ``DeepFace.analyze`` code path, offline.

deepface 0.0.103 looks its ONNX graphs up at ``$DEEPFACE_HOME/.deepface/weights/<name>.onnx``. The test
writes project-made graphs there with deepface's input and output shapes ((n, 224, 224, 3) in [0, 1],
channels in BGR order as deepface's OpenCV-trained models take them → softmax (n, 2) gender [Woman, Man], (n, 6) race, (n, 101) age): a linear map of the mean
colour, so the expected probabilities are known in closed form. Needs the extra `faces` and `onnx`.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("deepface", reason="deepface is the optional extra `faces` (pip install 'debias-bench[faces]')")
onnx = pytest.importorskip("onnx", reason="the test writes its stand-in deepface graphs with the `onnx` package")

from benchmark.errors import ModelLoadError  # noqa: E402

# deepface's output orders (deepface/models/demography/DemographyUtils.py)
DF_GENDER = ["Woman", "Man"]
DF_RACE = ["asian", "indian", "black", "white", "middle eastern", "latino hispanic"]

# mean colour (B, G, R) → logits; red faces read "Man" and "white", blue ones "Woman" and "asian"
W_GENDER = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]], dtype=np.float32)
W_RACE = np.zeros((3, 6), dtype=np.float32)
W_RACE[2, DF_RACE.index("white")] = 2.0
W_RACE[2, DF_RACE.index("latino hispanic")] = 1.0
W_RACE[0, DF_RACE.index("asian")] = 2.5
B_AGE = np.full(101, -20.0, dtype=np.float32)
B_AGE[70] = 0.0  # apparent age 70: "old"


def _graph(path, weight: np.ndarray, bias: np.ndarray) -> None:
    from onnx import TensorProto, helper, numpy_helper

    k = weight.shape[1]
    nodes = [helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0),
             helper.make_node("MatMul", ["mean", "W"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    graph = helper.make_graph(
        nodes, "stand-in", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 224, 224, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", k])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b"),
         numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # onnxruntime 1.32 reads IR ≤ 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def deepface_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("deepface-home")
    weights = home / ".deepface" / "weights"
    weights.mkdir(parents=True)
    _graph(weights / "gender_model_weights.onnx", W_GENDER, np.zeros(2, np.float32))
    _graph(weights / "race_model_single_batch.onnx", W_RACE, np.zeros(6, np.float32))
    _graph(weights / "age_model_weights.onnx", np.zeros((3, 101), np.float32), B_AGE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPFACE_HOME", str(home))
        mp.setenv("DEEPFACE_BACKEND_ENGINE", "onnx")
        yield home


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def test_analyze_path_gives_per_image_probabilities(deepface_home) -> None:
    from classifiers import CLASSIFIERS
    from classifiers.deepface import DeepFaceClassifier

    assert CLASSIFIERS.get("deepface") is DeepFaceClassifier
    clf = DeepFaceClassifier(actions=("gender", "race", "age"), crop_faces=False)
    colours = np.array([[255, 0, 0], [0, 0, 255], [128, 128, 128]], dtype=np.uint8)  # RGB
    images = np.broadcast_to(colours[:, None, None, :], (3, 32, 32, 3)).copy()
    probs = clf.predict(images)
    assert clf.attributes == {"gender": ["male", "female"],
                              "race6": ["white", "black", "asian", "indian", "middle eastern", "latino hispanic"],
                              "race": ["white", "black", "asian", "indian"], "age": ["young", "adult", "old"]}
    for i, rgb in enumerate(colours.astype(np.float64) / 255):
        bgr = rgb[::-1]
        g = _softmax(bgr @ W_GENDER)  # [Woman, Man]
        np.testing.assert_allclose(probs["gender"][i], [g[1], g[0]], rtol=1e-4)
        r = _softmax(bgr @ W_RACE)
        order = [DF_RACE.index(c) for c in clf.attributes["race6"]]
        np.testing.assert_allclose(probs["race6"][i], r[order], rtol=1e-4)
        four = r[order[:4]]
        np.testing.assert_allclose(probs["race"][i], four / four.sum(), rtol=1e-4)
    # the graphs got BGR, as deepface's own models expect: red reads male/white, blue female/asian
    assert probs["gender"][0].argmax() == 0 and probs["gender"][1].argmax() == 1
    assert clf.attributes["race"][probs["race"][0].argmax()] == "white"
    assert clf.attributes["race"][probs["race"][1].argmax()] == "asian"
    np.testing.assert_array_equal(probs["age"], np.tile([0.0, 0.0, 1.0], (3, 1)))  # apparent age 70: old
    for p in probs.values():
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert clf.detect(images).all()  # "skip" and no cropper: every image counts


def test_missing_onnx_graph_is_one_line_error_and_nothing_downloads(deepface_home, tmp_path, monkeypatch) -> None:
    from classifiers.deepface import DeepFaceClassifier

    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="race_model_single_batch.onnx") as err:
        DeepFaceClassifier(crop_faces=False)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value) and "DEEPFACE_HOME" in str(err.value)
    assert not any(p.suffix == ".onnx" for p in tmp_path.rglob("*")), "something was downloaded"


def test_fingerprint_follows_the_graphs(deepface_home) -> None:
    from classifiers.deepface import DeepFaceClassifier

    a = DeepFaceClassifier(crop_faces=False).fingerprint
    assert a == DeepFaceClassifier(crop_faces=False).fingerprint
    path = deepface_home / ".deepface" / "weights" / "gender_model_weights.onnx"
    original = path.read_bytes()
    try:
        _graph(path, -W_GENDER, np.zeros(2, np.float32))
        assert DeepFaceClassifier(crop_faces=False).fingerprint != a
    finally:
        path.write_bytes(original)
    assert os.environ["DEEPFACE_BACKEND_ENGINE"] == "onnx"
