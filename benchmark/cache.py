"""Content-addressed store for generated images, per-image predictions and method artefacts.

Keys hash everything that determines a value (base model, method fingerprint, prompt text,
seed, sampler config; for predictions the image hash and classifier fingerprint), so a second
run with the same config recomputes nothing and a killed run resumes where it stopped.

Every write goes to a temporary file in the same directory and is renamed into place
(``os.replace`` is atomic on POSIX), so readers never see half a file and two runs sharing a
cache cannot corrupt it. Each entry carries the sha256 of its payload; an entry that fails the
check is deleted and reported as missing, so it is regenerated.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from benchmark.errors import CacheError
from benchmark.hashing import hash_bytes, hash_value

log = logging.getLogger(__name__)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a unique temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CacheError(f"{path}: cannot write ({exc.strerror or exc})") from None


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class CachedImage(NamedTuple):
    image: np.ndarray
    sha256: str
    seconds: float | None  # generation time per image when it was made (None: not recorded)


class Cache:
    """A directory of images (PNG), predictions (JSON) and artefact folders."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.corrupt_entries = 0

    # -- keys --------------------------------------------------------------------------------
    @staticmethod
    def image_key(method_fingerprint: str, prompt: str, seed: int, sampler: dict[str, Any]) -> str:
        return hash_value({"method": method_fingerprint, "prompt": prompt, "seed": int(seed), "sampler": sampler})

    def _image_path(self, key: str) -> Path:
        return self.root / "images" / key[:2] / f"{key}.png"

    def _pred_path(self, classifier_fingerprint: str, image_sha: str) -> Path:
        return self.root / "predictions" / classifier_fingerprint[:16] / image_sha[:2] / f"{image_sha}.json"

    def artefact_dir(self, method: str, key: str) -> Path:
        return self.root / "artefacts" / method / key[:16]

    # -- images ------------------------------------------------------------------------------
    def get_image(self, key: str) -> CachedImage | None:
        """The stored image, the sha256 of its PNG and its generation time, or None when absent or corrupt."""
        path = self._image_path(key)
        meta = path.with_suffix(".json")
        if not path.exists() or not meta.exists():
            return None
        try:
            data = path.read_bytes()
            info = json.loads(meta.read_text())
            expected = info["sha256"]
            if hash_bytes(data) != expected:
                raise ValueError("hash mismatch")
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            self._discard(path, meta, exc)
            return None
        seconds = info.get("seconds")
        return CachedImage(image, expected, float(seconds) if isinstance(seconds, (int, float)) else None)

    def put_image(self, key: str, image: np.ndarray, seconds: float | None = None) -> str:
        """Store an image and, if known, the seconds it took to generate (its share of its batch),
        so that a run served from the cache still reports seconds per image; returns the sha256
        of its PNG bytes (the image's identity)."""
        data = png_bytes(image)
        sha = hash_bytes(data)
        path = self._image_path(key)
        atomic_write(path, data)
        # The hash file goes last: an entry counts only once both halves are in place.
        meta = {"sha256": sha} if seconds is None else {"sha256": sha, "seconds": round(float(seconds), 6)}
        atomic_write(path.with_suffix(".json"), json.dumps(meta).encode())
        return sha

    # -- predictions --------------------------------------------------------------------------
    def get_predictions(self, classifier_fingerprint: str, image_sha: str) -> dict[str, Any] | None:
        path = self._pred_path(classifier_fingerprint, image_sha)
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text())
            if hash_value(entry["payload"]) != entry["sha256"]:
                raise ValueError("hash mismatch")
            return entry["payload"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._discard(path, None, exc)
            return None

    def put_predictions(self, classifier_fingerprint: str, image_sha: str, payload: dict[str, Any]) -> None:
        entry = {"payload": payload, "sha256": hash_value(payload)}
        atomic_write(self._pred_path(classifier_fingerprint, image_sha), json.dumps(entry).encode())

    def put_many_predictions(self, classifier_fingerprint: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """:meth:`put_predictions` for each (image sha, payload), in order."""
        for image_sha, payload in entries:
            self.put_predictions(classifier_fingerprint, image_sha, payload)

    # -- whole cells ---------------------------------------------------------------------------
    # A re-score reads a cell's images and predictions from one file each instead of one per image
    # (14,000 PNG decodes and 28,000 JSON reads on the world suite). The per-image entries stay the
    # source of truth; a cell file is a copy keyed by everything its per-image keys are keyed by.
    CELL_MAX_IMAGE_BYTES = 16 << 10  # only small images: for 512 px ones the copy would double the cache

    def _cell_path(self, kind: str, key: str) -> Path:
        return self.root / "cells" / kind / key[:2] / f"{key}.npz"

    def _read_cell(self, path: Path) -> dict[str, np.ndarray] | None:
        meta = path.with_suffix(".json")
        if not path.exists() or not meta.exists():
            return None
        try:
            data = path.read_bytes()
            if hash_bytes(data) != json.loads(meta.read_text())["sha256"]:
                raise ValueError("hash mismatch")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            self._discard(path, meta, exc)
            return None

    def _write_cell(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        atomic_write(path, data)
        atomic_write(path.with_suffix(".json"), json.dumps({"sha256": hash_bytes(data)}).encode())

    def get_cell_images(self, keys: list[str]) -> tuple[np.ndarray, list[str], list[float | None]] | None:
        """A cell's images, their PNG sha256s and generation seconds, as stored by :meth:`put_cell_images`."""
        found = self._read_cell(self._cell_path("images", hash_value(keys)))
        if found is None or len(found["images"]) != len(keys) or len(found["shas"]) != len(keys):
            return None
        seconds = [None if np.isnan(s) else float(s) for s in found["seconds"]]
        return found["images"], [str(s) for s in found["shas"]], seconds

    def put_cell_images(self, keys: list[str], images: np.ndarray, shas: list[str],
                        seconds: list[float | None]) -> None:
        if len(keys) == 0 or images[0].nbytes > self.CELL_MAX_IMAGE_BYTES:
            return
        self._write_cell(self._cell_path("images", hash_value(keys)), {
            "images": np.ascontiguousarray(images), "shas": np.array(shas, dtype="U64"),
            "seconds": np.array([np.nan if s is None else s for s in seconds], dtype=np.float64)})

    def get_cell_predictions(self, classifier_fingerprint: str, shas: list[str]) -> dict[str, np.ndarray] | None:
        """A cell's predictions for one classifier ({attribute: probs (N, K)} and ``"subject"`` (N,))."""
        found = self._read_cell(self._cell_path("predictions", hash_value([classifier_fingerprint, shas])))
        if found is None or any(len(v) != len(shas) for v in found.values()):
            return None
        return found

    def put_cell_predictions(self, classifier_fingerprint: str, shas: list[str], arrays: dict[str, np.ndarray]) -> None:
        self._write_cell(self._cell_path("predictions", hash_value([classifier_fingerprint, shas])), arrays)

    def _discard(self, path: Path, meta: Path | None, exc: Exception) -> None:
        self.corrupt_entries += 1
        log.warning("cache entry %s is corrupt (%s); it will be regenerated", path, exc)
        for p in (path, meta):
            if p is not None:
                p.unlink(missing_ok=True)


class DiskMemo:
    """``fn(images) -> array`` remembered on disk, keyed by ``fingerprint`` and the images' bytes, so a
    re-score of cached images reads their CLIP embeddings and FID features instead of recomputing them.
    A file that cannot be read back as the right shape is recomputed and rewritten."""

    def __init__(self, fn: Any, fingerprint: str, folder: str | Path) -> None:
        self.fn, self.fingerprint, self.folder = fn, fingerprint, Path(folder)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import hashlib

        images = np.ascontiguousarray(images)
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"{self.fingerprint}|{images.dtype}|{images.shape}|".encode())
        digest.update(images.tobytes())
        key = digest.hexdigest()
        path = self.folder / key[:2] / f"{key}.npy"
        try:
            known = np.load(path, allow_pickle=False)
            if known.shape[:1] == images.shape[:1] and np.isfinite(known).all():
                return known
        except (OSError, ValueError):
            pass
        value = np.asarray(self.fn(images))
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        try:
            atomic_write(path, buf.getvalue())
        except OSError:  # a read-only cache still scores
            log.warning("could not keep %s", path)
        return value


class CachedImageEncoder:
    """An embedder whose ``encode_images`` goes through :class:`DiskMemo`; everything else is the
    wrapped embedder's."""

    def __init__(self, embedder: Any, folder: str | Path) -> None:
        self._embedder = embedder
        self.encode_images = DiskMemo(embedder.encode_images, embedder.fingerprint, folder)
        # texts as an array of code points, so that DiskMemo keys them by their bytes like images
        self._texts = DiskMemo(lambda codes: embedder.encode_texts(_texts_of(codes)), embedder.fingerprint,
                               Path(folder) / "texts")

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if any("\x00" in t for t in texts):  # not representable by _codes_of
            return self._embedder.encode_texts(texts)
        return self._texts(_codes_of(texts))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


def _codes_of(texts: list[str]) -> np.ndarray:
    """Texts as a (N, L) uint32 array of code points, zero-padded (a text holds no NUL)."""
    width = max((len(t) for t in texts), default=0)
    out = np.zeros((len(texts), width), np.uint32)
    for i, t in enumerate(texts):
        out[i, :len(t)] = [ord(c) for c in t]
    return out


def _texts_of(codes: np.ndarray) -> list[str]:
    return ["".join(chr(c) for c in row if c) for row in codes]

