"""Test doubles shared by several test modules."""

from __future__ import annotations

import numpy as np
import torch


class PixelEmbedder:
    """A fixed random projection of 4x4-pooled pixels: deterministic, unit-norm, CLIP-shaped."""

    fingerprint = "test-pixel-embedder"

    def __init__(self, dim: int = 16) -> None:
        self.w = torch.randn(48, dim, generator=torch.Generator().manual_seed(0))

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        x = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.nn.functional.normalize((x - 0.5) @ self.w, dim=1).numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError
