"""Image/text embedders (CLIP space) used by CLIP metrics, zero-shot classifiers and methods."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Any CLIP-like model: L2-normalised embeddings of images and texts in one space."""

    fingerprint: str

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) → float32 (N, D), unit norm."""
        ...

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """list of N strings → float32 (N, D), unit norm."""
        ...
