"""CLIP-based prompt alignment (CLIP-T) and edit faithfulness (CLIP-I).

CLIP-T (Hessel et al., "CLIPScore", EMNLP 2021, without their w = 2.5 factor; torchmetrics ``clip_score``
as used by InvDiff, Hou et al. 2025):
    CLIP-T_i = 100 · max(cos(E_img(x_i), E_txt(prompt_i)), 0)
CLIP-I (DiffLens, Shi et al., CVPR 2025): image embeddings of a debiased image and of the baseline image
from the same seed,
    CLIP-I_i = (cos(E_img(x_i), E_img(x_i^base)) + 1) / 2 ∈ [0, 1].

Both take any ``benchmark.embedding.Embedder`` (encode_images / encode_texts), e.g. an open_clip model
or the world's own CLIP; the per-image scores feed ``report.mean_records`` for intervals.
"""

from __future__ import annotations

import numpy as np

from benchmark.embedding import Embedder
from benchmark.errors import DataError


def _unit(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"{name}: expected embeddings of shape (N, D) with N > 0, got {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{name}: embeddings contain NaN or Inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError(f"{name}: an embedding has zero norm")
    # Embedders promise unit norm; normalising again keeps float16 models and fakes honest.
    return x / norms


def _paired_cos(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> np.ndarray:
    ua, ub = _unit(a, name_a), _unit(b, name_b)
    if ua.shape != ub.shape:
        raise DataError(f"{name_a} {ua.shape} and {name_b} {ub.shape} must pair up row by row")
    return (ua * ub).sum(axis=1)


def clip_t_from_embeddings(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Per-image CLIP-T = 100 · max(cos(image_i, text_i), 0), rows paired."""
    return 100.0 * np.maximum(_paired_cos(image_emb, text_emb, "image_emb", "text_emb"), 0.0)


def clip_i_from_embeddings(image_emb: np.ndarray, baseline_emb: np.ndarray) -> np.ndarray:
    """Per-image CLIP-I = (cos(image_i, baseline_i) + 1) / 2, rows paired."""
    return (_paired_cos(image_emb, baseline_emb, "image_emb", "baseline_emb") + 1.0) / 2.0


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0:
        raise DataError(f"{name}: expected non-empty uint8 images of shape (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def _encode_images(embedder: Embedder, images: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate(
        [np.asarray(embedder.encode_images(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    )


def clip_t(embedder: Embedder, images: np.ndarray, texts: list[str] | str, batch_size: int = 64) -> np.ndarray:
    """Per-image CLIP-T of uint8 images (N, H, W, 3) against their prompts (one text, or one per image)."""
    imgs = _check_images(images, "images")
    texts = [texts] * len(imgs) if isinstance(texts, str) else list(texts)
    if len(texts) != len(imgs):
        raise DataError(f"clip_t: {len(imgs)} images but {len(texts)} texts")
    unique = sorted(set(texts))  # prompts repeat across images; encode each once
    text_emb = np.asarray(embedder.encode_texts(unique))
    row_of = {t: i for i, t in enumerate(unique)}
    rows = np.array([row_of[t] for t in texts])
    return clip_t_from_embeddings(_encode_images(embedder, imgs, batch_size), text_emb[rows])


def clip_i(embedder: Embedder, images: np.ndarray, baseline_images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Per-image CLIP-I between debiased images and the baseline images of the same seeds (same order)."""
    a, b = _check_images(images, "images"), _check_images(baseline_images, "baseline_images")
    if a.shape[0] != b.shape[0]:
        raise DataError(f"clip_i: {a.shape[0]} images but {b.shape[0]} baseline images")
    return clip_i_from_embeddings(_encode_images(embedder, a, batch_size), _encode_images(embedder, b, batch_size))
