"""Face detection and cropping before a face-attribute classifier.

:class:`FaceCropper` runs facenet-pytorch's MTCNN (Zhang et al., "Joint Face Detection and Alignment
Using Multitask Cascaded Convolutional Networks", IEEE SPL 2016), whose P/R/O-net weights ship inside
the facenet-pytorch wheel, so detection works offline. For each image it keeps the most confident
face, widens its box by ``margin`` on every side (FairFace crops faces with a 0.25 padding, Kärkkäinen
& Joo 2021; DiffLens does the same before FairFace), makes it square and resizes it.

An image with no face keeps a resize of the whole image as its "crop" and is marked ``False`` in the
mask: classifiers still predict on it, and the runner counts it (``no_subject_rate``) and leaves it
out of the distribution metrics. Nothing is dropped.

facenet-pytorch 2.6.0 declares ``torch<2.3``; install it with ``pip install --no-deps
facenet-pytorch==2.6.0`` (its code runs on the torch this project pins).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from PIL import Image

from benchmark.errors import ModelLoadError

INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"
CROP_ENV = "DEBIAS_BENCH_FACE_CROP"


def crop_default() -> bool:
    """Whether face classifiers crop faces first when not told: ``$DEBIAS_BENCH_FACE_CROP``, default on."""
    return os.environ.get(CROP_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def mtcnn_available() -> bool:
    try:
        import facenet_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def square_box(box: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) widened by ``margin`` × its larger side on every side, made square."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = side / 2
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


class FaceCropper:
    """MTCNN face detector + square cropper: ``crop(images) -> (crops, found)``.

    ``min_confidence`` is the MTCNN probability a face needs to count (MTCNN's own stage thresholds
    apply first). The last batch's result is memoised, so a classifier's ``predict`` and ``detect``
    on the same images run the detector once.
    """

    def __init__(self, size: int = 224, margin: float = 0.25, min_confidence: float = 0.9,
                 min_face_size: int = 20, device: str | None = None) -> None:
        if not mtcnn_available():
            raise ModelLoadError(f"face cropping needs facenet-pytorch (MTCNN): `{INSTALL_HINT}`, "
                                 "or turn cropping off (crop_faces=False / DEBIAS_BENCH_FACE_CROP=0)")
        import torch
        from facenet_pytorch import MTCNN

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.size, self.margin, self.min_confidence, self.min_face_size = size, margin, min_confidence, min_face_size
        self._mtcnn = MTCNN(min_face_size=min_face_size, keep_all=True, device=self.device)
        self.fingerprint = (f"mtcnn-facenet-pytorch-2.6:size{size}:margin{margin}:conf{min_confidence}"
                            f":minface{min_face_size}")
        self._memo: tuple[str, tuple[np.ndarray, np.ndarray]] | None = None

    def boxes(self, images: np.ndarray) -> list[np.ndarray | None]:
        """The most confident face box (x1, y1, x2, y2) per image, or None where there is none."""
        out: list[np.ndarray | None] = []
        for img in images:  # one at a time: MTCNN's batch path needs equal sizes and gains little on CPU
            if min(img.shape[:2]) < self.min_face_size:  # MTCNN's image pyramid is empty (and it crashes)
                out.append(None)
                continue
            boxes, probs = self._mtcnn.detect(Image.fromarray(img))
            if boxes is None or len(boxes) == 0:
                out.append(None)
                continue
            probs = np.asarray(probs, dtype=np.float64)
            best = int(np.argmax(probs))
            out.append(np.asarray(boxes[best], dtype=np.float64) if probs[best] >= self.min_confidence else None)
        return out

    def crop(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, H, W, 3) → (uint8 crops (N, size, size, 3), bool (N,) face found)."""
        images = np.ascontiguousarray(images)
        key = f"{images.shape}:{hashlib.sha1(images.tobytes()).hexdigest()}"
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        crops, found = [], []
        for img, box in zip(images, self.boxes(images), strict=True):
            pil = Image.fromarray(img)
            if box is not None:
                pil = pil.crop(square_box(box, self.margin))  # PIL pads outside the image with black
            crops.append(np.asarray(pil.resize((self.size, self.size), Image.Resampling.BILINEAR)))
            found.append(box is not None)
        result = (np.stack(crops), np.array(found, dtype=bool))
        self._memo = (key, result)
        return result
