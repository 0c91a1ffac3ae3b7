"""Image sets passed between stages: uint8 arrays (N, H, W, 3) with captions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmark.hashing import hash_bytes


@dataclass
class ImageSet:
    """Images with one caption each. ``labels`` holds ground-truth attributes where they are
    known (the world); only oracle variants and evaluation code may read them."""

    images: np.ndarray
    captions: list[str]
    name: str = "images"
    labels: dict[str, np.ndarray] | None = None
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if len(self.captions) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.captions)} captions")
        if not self.fingerprint:
            self.fingerprint = hash_bytes(self.images.tobytes() + "\n".join(self.captions).encode())

    def __len__(self) -> int:
        return len(self.images)

    def without_labels(self) -> ImageSet:
        return ImageSet(self.images, self.captions, self.name, None, self.fingerprint)


def to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) to float torch (N, 3, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
