"""A colour-tone classifier (warm vs cool) that works on any RGB image.

It needs no weights, so it serves smoke runs of the loop on randomly initialised models:
p(warm) = sigmoid(scale · (mean red − mean blue) / 255).
"""

from __future__ import annotations

import numpy as np

from classifiers.base import Classifier


class PaletteClassifier(Classifier):
    name = "palette"

    def __init__(self, scale: float = 12.0) -> None:
        super().__init__()
        self.scale = scale
        self.attributes = {"tone": ["warm", "cool"]}
        self.fingerprint = f"palette-v1-scale{scale}"

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        rgb = images.astype(np.float64).reshape(len(images), -1, 3).mean(axis=1)
        warm = 1.0 / (1.0 + np.exp(-self.scale * (rgb[:, 0] - rgb[:, 2]) / 255.0))
        return {"tone": np.stack([warm, 1.0 - warm], axis=1)}
