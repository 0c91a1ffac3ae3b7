"""Attribute classifiers, found by name through :data:`CLASSIFIERS`."""

from benchmark.registry import Registry
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
)

__all__ = ["CLASSIFIERS", "Classifier"]
