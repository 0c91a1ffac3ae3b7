"""Attribute classifiers, found by name through :data:`CLASSIFIERS`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.registry import Registry

if TYPE_CHECKING:
    from classifiers.base import Classifier

CLASSIFIERS: Registry[type[Classifier]] = Registry(
    "classifier",
    {
        "world": "classifiers.world:WorldClassifier",
        "world-weak": "classifiers.world:WeakWorldClassifier",
        "clip": "classifiers.clip_zeroshot:ClipZeroShot",
        "deepface": "classifiers.deepface:DeepFaceClassifier",
        "fairface": "classifiers.fairface:FairFace",
        "palette": "classifiers.palette:PaletteClassifier",
    },
    {
        "world": "world profile: colour, shade and digit of a world image (strong, shipped weights)",
        "world-weak": "world profile: its deliberately weak twin (for the CLEAM correction)",
        "clip": "world profile: the world's CLIP zero-shot over colour, digit and shade texts (another open_clip "
                "model and class texts: ClipZeroShot(model=..., templates=...) from Python)",
        "deepface": "real profile: gender, race, age with deepface (needs its ONNX weights)",
        "fairface": "real profile: gender, race, age with FairFace (needs its weights)",
        "palette": "tiny profile: warm/cool tone by a colour rule (smoke runs)",
    },
)


def __getattr__(name: str) -> Any:
    if name == "Classifier":  # imports numpy and torch only when used
        from classifiers.base import Classifier

        return Classifier
    raise AttributeError(f"module 'classifiers' has no attribute {name!r}")


__all__ = ["CLASSIFIERS", "Classifier"]
