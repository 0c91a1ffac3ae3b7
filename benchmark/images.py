"""Image sets passed between stages: uint8 arrays (N, H, W, 3) with captions.

An image set's ``fingerprint`` keys every cache and artefact made from it, so it must be the same on
every machine. A set made by a program (the world's renderer) is fingerprinted by its *recipe*
(the program's version, seeds, labels, captions): float rounding in the program may change a few
pixel bytes on another CPU, and must not change a key. A set read from files has no recipe and is
fingerprinted by its bytes, which are the same everywhere. ``content_hash`` always hashes the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from benchmark.hashing import hash_bytes, hash_value


@dataclass
class ImageSet:
    """Images with one caption each. ``labels`` holds ground-truth attributes where they are
    known (the world); only oracle variants and evaluation code may read them."""

    images: np.ndarray
    captions: list[str]
    name: str = "images"
    labels: dict[str, np.ndarray] | None = None
    fingerprint: str = field(default="")
    recipe: dict | None = None  # what made the images (see the module doc); keys the set when given

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if len(self.captions) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.captions)} captions")
        if not self.fingerprint:
            if self.recipe is not None:
                self.fingerprint = hash_value({"recipe": self.recipe, "captions": self.captions})
            else:
                self.fingerprint = self.content_hash()

    def content_hash(self) -> str:
        """sha256 of the pixel bytes and captions (differs across CPUs for rendered sets)."""
        return hash_bytes(self.images.tobytes() + "\n".join(self.captions).encode())

    def __len__(self) -> int:
        return len(self.images)

    def without_labels(self) -> ImageSet:
        return ImageSet(self.images, self.captions, self.name, None, self.fingerprint, self.recipe)


def to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) to float torch (N, 3, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class LazyImageSet(ImageSet):
    """An :class:`ImageSet` made by a program, whose images are made (``make()``) only when first read.
    Its fingerprint comes from its recipe and captions, so it keys caches and artefacts without the
    images: a run whose method artefacts and images are all cached never renders the set."""

    def __init__(self, make: Callable[[], np.ndarray], captions: list[str], name: str, recipe: dict,
                 labels: dict[str, np.ndarray] | None = None) -> None:
        self.__dict__["_make"] = make
        super().__init__(None, captions, name, labels, "", recipe)  # type: ignore[arg-type]

    def __setattr__(self, key: str, value: object) -> None:
        if key == "images" and value is None and "_make" in self.__dict__:
            return  # the dataclass __init__'s placeholder: made on first read
        super().__setattr__(key, value)

    def __getattr__(self, key: str) -> object:
        if key != "images" or "_make" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")
        images = self.__dict__["_make"]()
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) != len(self.captions):
            raise ValueError(f"{self.name}: made {images.dtype} {images.shape} for {len(self.captions)} captions")
        self.__dict__["images"] = images
        return images

    def __post_init__(self) -> None:
        self.fingerprint = self.fingerprint or hash_value({"recipe": self.recipe, "captions": self.captions})

    def __len__(self) -> int:
        return len(self.captions)

