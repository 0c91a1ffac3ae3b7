"""deepface's gender and race models through ``DeepFace.analyze`` (Serengil & Özpınar, "LightFace: A
Hybrid Deep Face Recognition Framework", ASYU 2020; github.com/serengil/deepface, 0.0.103).

Needs the optional extra ``faces`` (``deepface``, ``werkzeug``: deepface imports werkzeug but does not
declare it). deepface 0.0.103 runs ONNX graphs that it looks up, and would otherwise download, at
``$DEEPFACE_HOME/.deepface/weights/<name>.onnx``; this class checks the files are there first and
never lets deepface download. It pins deepface's backend to onnxruntime (``DEEPFACE_BACKEND_ENGINE=onnx``
unless set), since deepface otherwise prefers PyTorch graphs whenever torch is installed.

Per-image probabilities come from the percentage dicts ``analyze`` returns:
``gender`` {Woman, Man} → [male, female]; ``race`` {asian, indian, black, white, middle eastern,
latino hispanic} → ``race6`` and ``race`` (white, black, asian, indian: the four groups of the prompt
sets, renormalised, as for FairFace's race4). deepface's age model only exposes a point estimate,
so ``age`` (young 0–19 / adult 20–59 / old 60+) is one-hot and only computed when asked for
(``actions`` includes "age").

Images are passed with ``detector_backend="skip"`` after the project's own MTCNN cropper
(``crop_faces``, default on) so no detector weights are fetched; ``detector_backend`` can name one of
deepface's detectors instead, and then ``detect`` reports deepface's ``face_confidence > 0``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from benchmark.errors import ConfigError, ModelLoadError
from benchmark.hashing import hash_file, hash_value
from classifiers.base import Classifier
from classifiers.faces import FaceCropper, crop_default
from classifiers.fairface import renormalise

WEIGHT_FILES = {"gender": "gender_model_weights.onnx", "race": "race_model_single_batch.onnx",
                "age": "age_model_weights.onnx"}
GENDER = {"male": "Man", "female": "Woman"}
RACE6 = ["white", "black", "asian", "indian", "middle eastern", "latino hispanic"]
RACE = ["white", "black", "asian", "indian"]
AGE = ["young", "adult", "old"]
AGE_EDGES = (20, 60)  # young < 20 ≤ adult < 60 ≤ old: FairFace's age bins grouped as classifiers/fairface.py does
INSTALL_HINT = 'pip install "debias-bench[faces]" (deepface, werkzeug)'


def weights_dir() -> Path:
    """Where deepface looks for its ONNX graphs: ``$DEEPFACE_HOME/.deepface/weights`` (home: ``~``)."""
    return Path(os.environ.get("DEEPFACE_HOME") or Path.home()) / ".deepface" / "weights"


def _import_deepface():
    os.environ.setdefault("DEEPFACE_BACKEND_ENGINE", "onnx")
    try:
        from deepface import DeepFace
        from deepface.commons import backend_utils
    except ImportError as exc:
        raise ModelLoadError(f"the deepface classifier needs the extra `faces` ({exc}): {INSTALL_HINT}") from None
    engine = backend_utils.get_backend_engine()
    if engine != "onnx":
        raise ModelLoadError(f"deepface runs on {engine!r}; this classifier uses its ONNX graphs: "
                             "set DEEPFACE_BACKEND_ENGINE=onnx before deepface is first used")
    return DeepFace


def _age_group(age: float) -> int:
    return int(age >= AGE_EDGES[0]) + int(age >= AGE_EDGES[1])


class DeepFaceClassifier(Classifier):
    """``actions``: deepface analyses to run ("gender", "race", "age"). See the module docstring."""

    name = "deepface"

    def __init__(self, actions: tuple[str, ...] = ("gender", "race"), crop_faces: bool | None = None,
                 cropper: FaceCropper | None = None, detector_backend: str = "skip") -> None:
        super().__init__()
        unknown = set(actions) - set(WEIGHT_FILES)
        if unknown or not actions:
            raise ConfigError(f"deepface: actions must be some of {sorted(WEIGHT_FILES)}, got {list(actions)}")
        self._deepface = _import_deepface()
        folder = weights_dir()
        files = {a: folder / WEIGHT_FILES[a] for a in actions}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise ModelLoadError(f"deepface weights not found: {', '.join(missing)}; put deepface's ONNX graphs "
                                 "there or set DEEPFACE_HOME (weights are never downloaded)")
        self.actions = tuple(actions)
        self.detector_backend = detector_backend
        if cropper is None and detector_backend == "skip" and (crop_faces if crop_faces is not None
                                                               else crop_default()):
            cropper = FaceCropper(size=224)
        self.cropper = cropper
        self.attributes = {}
        if "gender" in actions:
            self.attributes["gender"] = list(GENDER)
        if "race" in actions:
            self.attributes["race6"] = list(RACE6)
            self.attributes["race"] = list(RACE)
        if "age" in actions:
            self.attributes["age"] = list(AGE)
        from importlib.metadata import version

        self.confusion_source = "not measured: deepface publishes no confusion matrices"
        self.fingerprint = hash_value({"classifier": "deepface-v1", "deepface": version("deepface"),
                                       "weights": {a: hash_file(p) for a, p in files.items()},
                                       "detector": detector_backend, "crop": getattr(cropper, "fingerprint", None)})
        self._memo: tuple[str, list[dict]] | None = None

    def _analyze(self, images: np.ndarray) -> list[dict]:
        """One result dict per image (deepface's largest face when its own detector runs)."""
        images = np.asarray(images)
        key = f"{images.shape}:{hashlib.sha1(images.tobytes()).hexdigest()}"
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        inputs = self.cropper.crop(images)[0] if self.cropper is not None else images
        results = []
        for img in inputs:
            # deepface takes BGR arrays (OpenCV order) and flips them to RGB itself.
            faces = self._deepface.analyze(np.ascontiguousarray(img[:, :, ::-1]), actions=list(self.actions),
                                           detector_backend=self.detector_backend, enforce_detection=False,
                                           silent=True)
            results.append(max(faces, key=lambda f: f["region"]["w"] * f["region"]["h"]))
        self._memo = (key, results)
        return results

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        results = self._analyze(images)
        out: dict[str, np.ndarray] = {}
        if "gender" in self.actions:
            out["gender"] = _rows([[r["gender"][GENDER[c]] for c in GENDER] for r in results])
        if "race" in self.actions:
            out["race6"] = _rows([[r["race"][c] for c in RACE6] for r in results])
            out["race"] = _rows(out["race6"][:, : len(RACE)])
        if "age" in self.actions:
            out["age"] = np.eye(len(AGE))[[_age_group(r["age"]) for r in results]].reshape(len(results), len(AGE))
        return out

    def detect(self, images: np.ndarray) -> np.ndarray:
        if self.cropper is not None:
            return self.cropper.crop(np.asarray(images))[1]
        if self.detector_backend == "skip":
            return np.ones(len(images), dtype=bool)
        return np.array([r["face_confidence"] > 0 for r in self._analyze(images)], dtype=bool)


def _rows(values) -> np.ndarray:
    """deepface's percentages → probabilities: rows rescaled to sum to 1 (they sum to ~100)."""
    return renormalise(np.asarray(values, dtype=np.float64).reshape(len(values), -1))
