"""FairFace: a ResNet-34 with one 18-way head (Kärkkäinen & Joo, "FairFace: Face Attribute Dataset for
Balanced Race, Gender, and Age", WACV 2021; github.com/joojs/fairface, ``predict.py``).

Logits 0–6 are race (7 groups), 7–8 gender, 9–17 age (9 bins), each a separate softmax. Inputs are
face crops resized to 224×224 with ImageNet normalisation. The released checkpoint
``res34_fair_align_multi_7_20190809.pt`` is a plain state dict of ``torchvision.models.resnet34`` with
``fc`` replaced by ``Linear(512, 18)``.

Weights: ``FairFace(weights=PATH)`` or ``$DEBIAS_BENCH_FAIRFACE_WEIGHTS``; a ``.safetensors`` file, or
a state dict read with ``torch.load(weights_only=True)`` (an arbitrary pickle is refused, never run).

Attributes: ``race7``, ``gender``, ``age9`` (FairFace's own classes) and the groups the benchmark's
prompt sets use (as in the DiffLens paper's evaluation): ``race4`` = White / Black / Asian (East +
Southeast Asian) / Indian, and ``age3`` = young (0–19) / adult (20–59) / old (60+). ``race`` and
``age`` are the same arrays as ``race4`` and ``age3`` under the names the prompt sets use.

race4 leaves out FairFace's Latino_Hispanic and Middle Eastern groups (the four-group scheme has no
place for them), so race4 is the race7 distribution conditioned on the four groups: the mapped
probabilities summed, then renormalised to 1 (uniform in
the degenerate case of no mass on the four groups). age3 covers all nine bins, so its sums already add to 1.

Faces are detected and cropped first (``crop_faces``, default on; ``$DEBIAS_BENCH_FACE_CROP=0`` turns
it off) with :class:`classifiers.faces.FaceCropper`; images with no face are marked by ``detect``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmark.errors import ModelLoadError
from benchmark.hashing import hash_file, hash_value
from classifiers.base import Classifier
from classifiers.faces import FaceCropper, crop_default

WEIGHTS_ENV = "DEBIAS_BENCH_FAIRFACE_WEIGHTS"
CHECKPOINT_NAME = "res34_fair_align_multi_7_20190809.pt"

# FairFace's label order (predict.py).
RACE7 = ["white", "black", "latino_hispanic", "east_asian", "southeast_asian", "indian", "middle_eastern"]
GENDER = ["male", "female"]
AGE9 = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
HEADS = {"race7": slice(0, 7), "gender": slice(7, 9), "age9": slice(9, 18)}
NUM_LOGITS = 18

RACE4 = {"white": ["white"], "black": ["black"], "asian": ["east_asian", "southeast_asian"], "indian": ["indian"]}
AGE3 = {"young": ["0-2", "3-9", "10-19"], "adult": ["20-29", "30-39", "40-49", "50-59"], "old": ["60-69", "70+"]}
# Names the prompt sets use for the grouped attributes.
ALIASES = {"race": "race4", "age": "age3"}

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
INPUT_SIZE = 224


def group_matrix(classes: list[str], groups: dict[str, list[str]]) -> np.ndarray:
    """0/1 matrix (len(classes), len(groups)): column g marks the classes summed into group g."""
    m = np.zeros((len(classes), len(groups)))
    for j, members in enumerate(groups.values()):
        for c in members:
            m[classes.index(c), j] = 1.0
    return m


RACE4_MATRIX = group_matrix(RACE7, RACE4)
AGE3_MATRIX = group_matrix(AGE9, AGE3)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def probabilities_from_logits(logits: np.ndarray) -> dict[str, np.ndarray]:
    """FairFace's (N, 18) logits → {race7, gender, age9, race4, age3}: float64 rows summing to 1."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != NUM_LOGITS:
        raise ValueError(f"expected FairFace logits of shape (N, {NUM_LOGITS}), got {logits.shape}")
    out = {name: _softmax(logits[:, s]) for name, s in HEADS.items()}
    out["race4"] = renormalise(out["race7"] @ RACE4_MATRIX)
    out["age3"] = out["age9"] @ AGE3_MATRIX
    return out


def renormalise(p: np.ndarray) -> np.ndarray:
    """Rows rescaled to sum to 1; a row with no mass at all (every probability underflowed) becomes uniform."""
    total = p.sum(axis=1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / p.shape[1])


def build_model() -> torch.nn.Module:
    """torchvision ResNet-34 with an 18-way ``fc``, randomly initialised (FairFace's architecture)."""
    from torchvision.models import resnet34

    return resnet34(weights=None, num_classes=NUM_LOGITS)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or from ``torch.load(weights_only=True)``; one-line ModelLoadError."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: FairFace weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError on any malformed header
            raise ModelLoadError(f"{path}: unreadable .safetensors file ({_first_line(exc)})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ModelLoadError(
                f"{path}: refused: not loadable with torch.load(weights_only=True); only plain state dicts "
                "(or .safetensors) are accepted, arbitrary pickles are never loaded") from None
        except Exception as exc:
            raise ModelLoadError(f"{path}: unreadable weights file ({type(exc).__name__}: {_first_line(exc)})") from None
    # Training scripts often wrap the state dict ({"state_dict": ...}) or save a DataParallel one ("module.").
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class FairFace(Classifier):
    """FairFace ResNet-34; see the module docstring for weights, attributes and cropping.

    ``weights``: path to the state dict (default ``$DEBIAS_BENCH_FAIRFACE_WEIGHTS``). ``crop_faces``:
    detect and crop faces with MTCNN first (default ``$DEBIAS_BENCH_FACE_CROP``, on). ``cropper``: a
    ready :class:`FaceCropper` (implies cropping).
    """

    name = "fairface"

    def __init__(self, weights: str | Path | None = None, crop_faces: bool | None = None,
                 cropper: FaceCropper | None = None,
                 device: str | None = None, batch_size: int = 64) -> None:
        super().__init__()
        weights = weights or os.environ.get(WEIGHTS_ENV)
        if not weights:
            raise ModelLoadError(f"FairFace weights not given: pass weights=PATH or set {WEIGHTS_ENV} to "
                                 f"{CHECKPOINT_NAME} (a state dict) or a .safetensors file")
        state = load_state_dict(weights)
        model = build_model()
        missing, unexpected = _key_mismatch(model, state)
        if missing or unexpected:
            raise ModelLoadError(f"{weights}: not a FairFace ResNet-34 state dict ({len(missing)} missing keys, "
                                 f"e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")
        try:
            model.load_state_dict(state, strict=False)  # keys were checked above; shapes still are here
        except RuntimeError as exc:  # shape mismatches (e.g. a 2-way fc)
            raise ModelLoadError(f"{weights}: wrong tensor shapes for FairFace ({_shape_problem(exc)})") from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        if cropper is None and (crop_faces if crop_faces is not None else crop_default()):
            cropper = FaceCropper(size=INPUT_SIZE, device=self.device)
        self.cropper = cropper
        self.attributes = {
            "race7": list(RACE7), "gender": list(GENDER), "age9": list(AGE9),
            "race4": list(RACE4), "age3": list(AGE3),
        }
        for alias, source in ALIASES.items():
            self.attributes[alias] = list(self.attributes[source])
        self.confusion_source = ("not measured: FairFace reports accuracies only (Kärkkäinen & Joo 2021, Table 4); "
                                 "CLEAM variants need a confusion matrix measured on labelled faces")
        self.fingerprint = hash_value({"classifier": "fairface-resnet34-v1", "weights": hash_file(weights),
                                       "crop": getattr(cropper, "fingerprint", None)})

    def _inputs(self, images: np.ndarray) -> np.ndarray:
        if self.cropper is not None:
            images, _ = self.cropper.crop(images)
        return images

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, 18) float logits of uint8 (N, H, W, 3) images (after cropping, if on)."""
        images = self._inputs(np.asarray(images))
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = np.stack([
                np.asarray(Image.fromarray(img).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR))
                for img in images[i : i + self.batch_size]
            ]).astype(np.float32) / 255.0
            batch = (batch - IMAGENET_MEAN) / IMAGENET_STD
            x = torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()).to(self.device)
            with torch.no_grad():
                out.append(self.model(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, NUM_LOGITS), dtype=np.float32)

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        probs = probabilities_from_logits(self.logits(images))
        for alias, source in ALIASES.items():
            probs[alias] = probs[source]
        return probs

    def detect(self, images: np.ndarray) -> np.ndarray:
        if self.cropper is None:
            return np.ones(len(images), dtype=bool)
        return self.cropper.crop(np.asarray(images))[1]


def _key_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    # num_batches_tracked is a counter torchvision adds; old checkpoints may lack it.
    ours = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    theirs = {k for k in state if not k.endswith("num_batches_tracked")}
    return sorted(ours - theirs), sorted(theirs - ours)


def _shape_problem(exc: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
    return lines[0].rstrip(".") if lines else _first_line(exc)
