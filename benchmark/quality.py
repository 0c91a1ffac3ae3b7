"""Image-quality records (FID, KID, ΔFID, CLIP-T, ΔCLIP-T, CLIP-I) from per-image vectors.

A run computes each image's FID features and CLIP image embedding once (:func:`vectors_of`), scores
them here and writes them to ``features.safetensors``; the submission check reads that file and calls
the same :func:`quality_records`, so a claimed FID or CLIP score is recomputed by the code that made
it. Vectors are kept at float32 (what the extractors produce), so the file holds exactly what was scored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from benchmark.metrics.clip_score import clip_i_from_embeddings, clip_t_from_embeddings
from benchmark.metrics.fid import FeatureStats, frechet_distance, kernel_distance, paired_fid_delta
from benchmark.metrics.report import make_record, mean_records

FID_BOOT = 200  # resamples for the paired ΔFID interval (one eigenproblem each)
FEATURES_FILE = "features.safetensors"


@dataclass
class Vectors:
    """One (method, prompt set, prompt)'s per-image vectors, rows in seed order."""

    seeds: tuple[int, ...]
    features: np.ndarray | None = None  # (n, D) FID features
    embeddings: np.ndarray | None = None  # (n, E) CLIP image embeddings
    text: np.ndarray | None = None  # (E,) the prompt's CLIP text embedding


def as_stored(x: np.ndarray) -> np.ndarray:
    """The vectors as ``features.safetensors`` keeps them (float32), as float64 for the arithmetic."""
    return np.asarray(np.asarray(x, dtype=np.float32), dtype=np.float64)


def _none(records: list[dict]) -> list[dict]:
    return [{"classifier": None, "attribute": None, **r} for r in records]


def _fid_records(mine: Mapping[str, Vectors], base: Mapping[str, Vectors] | None,
                 reference: FeatureStats | None, n_boot: int, seed: int) -> list[dict]:
    feats = np.concatenate([v.features for v in mine.values()])
    n, out = len(feats), []
    gen = FeatureStats.from_features(feats, reference.fingerprint if reference is not None else "")
    if reference is not None:
        out.append(make_record(None, "fid", "vs-reference", frechet_distance(gen, reference), n))
        if reference.features is not None:  # precomputed statistics may carry no features
            out.append(make_record(None, "kid", "vs-reference", kernel_distance(gen, reference), n))
    if base is None:
        return _none(out)
    theirs = np.concatenate([base[p].features for p in mine])
    out.append(make_record(None, "fid", "vs-baseline", frechet_distance(feats, theirs), n))
    out.append(make_record(None, "kid", "vs-baseline", kernel_distance(feats, theirs), n))
    out = _none(out)
    if reference is not None and all(base[p].seeds == v.seeds for p, v in mine.items()):
        value, ci, p_value = paired_fid_delta(feats, theirs, reference, [len(v.features) for v in mine.values()],
                                              min(n_boot, FID_BOOT), seed)
        out.append({"classifier": None, "attribute": None,
                    **make_record(None, "delta_fid", "vs-reference", value, n, ci), "p_value": p_value})
    return out


def _clip_records(mine: Mapping[str, Vectors], base: Mapping[str, Vectors] | None, n_boot: int,
                  seed: int) -> list[dict]:
    boot = {"n_boot": n_boot, "seed": seed}
    scores = {p: clip_t_from_embeddings(v.embeddings, np.broadcast_to(v.text, v.embeddings.shape))
              for p, v in mine.items()}
    out = _none(mean_records(scores, "clip_t", "mean", True, **boot))
    if base is None:
        return out
    paired = {}
    for p, v in mine.items():
        if base[p].seeds == v.seeds:
            b = base[p]
            paired[p] = scores[p] - clip_t_from_embeddings(b.embeddings, np.broadcast_to(b.text, b.embeddings.shape))
    if paired:
        out += _none(mean_records(paired, "delta_clip_t", "mean", True, p_value=True, **boot))
    pairs = {p: clip_i_from_embeddings(v.embeddings, base[p].embeddings) for p, v in mine.items()}
    return out + _none(mean_records(pairs, "clip_i", "vs-baseline", True, **boot))


def quality_records(mine: Mapping[str, Vectors], base: Mapping[str, Vectors] | None,
                    reference: FeatureStats | None, n_boot: int, seed: int) -> list[dict]:
    """Quality records of one method on one prompt set (prompt id → vectors, in the prompt set's order).

    ``base`` holds the baseline's vectors for the same prompts (None for the baseline itself or when
    the baseline does not cover them); ``reference`` the reference statistics (None: no vs-reference
    records). FID and KID need ``features`` on every prompt, CLIP scores ``embeddings`` and ``text``.
    """
    if not mine:
        return []
    if base is not None and any(p not in base for p in mine):
        base = None
    out: list[dict] = []
    if all(v.features is not None for v in mine.values()) and (
            base is None or all(base[p].features is not None for p in mine)):
        out += _fid_records(mine, base, reference, n_boot, seed)
    clip_base = base if base is not None and all(base[p].embeddings is not None for p in mine) else None
    if all(v.embeddings is not None and v.text is not None for v in mine.values()):
        out += _clip_records(mine, clip_base, n_boot, seed)
    return out


VECTORS_FORMAT = "debias-bench-vectors/1"


def save_vectors(path: str | Path, rows: Sequence[Vectors], prompts: Sequence[str],
                 features_fingerprint: str | None, embedder_fingerprint: str | None) -> bool:
    """Write the vectors of ``rows`` (one per cell, in the predictions file's row order; ``prompts``
    the cells' prompt texts) as ``features.safetensors``; False (nothing written) when some cell has none."""
    from safetensors.numpy import save

    from benchmark.cache import atomic_write

    tensors: dict[str, np.ndarray] = {}
    if rows and all(v.features is not None for v in rows):
        tensors["features"] = np.concatenate([v.features for v in rows]).astype(np.float32)
    texts: list[str] = []
    if rows and all(v.embeddings is not None and v.text is not None for v in rows):
        tensors["embeddings"] = np.concatenate([v.embeddings for v in rows]).astype(np.float32)
        by_text = dict(zip(prompts, (v.text for v in rows), strict=True))
        texts = sorted(by_text)
        tensors["texts"] = np.stack([by_text[t] for t in texts]).astype(np.float32)
    if not tensors:
        return False
    meta = {"format": VECTORS_FORMAT, "texts": texts,
            "features_fingerprint": features_fingerprint or "", "embedder_fingerprint": embedder_fingerprint or ""}
    # one metadata key: safetensors writes several in no fixed order, and the file should be byte-stable
    atomic_write(Path(path), save(tensors, metadata={"debias_bench": json.dumps(meta, sort_keys=True)}))
    return True


@dataclass
class StoredVectors:
    """``features.safetensors`` as read back: per-row arrays (float64) and the prompt texts' embeddings."""

    features: np.ndarray | None
    embeddings: np.ndarray | None
    texts: dict[str, np.ndarray]
    features_fingerprint: str
    embedder_fingerprint: str


def load_vectors(path: str | Path, rows: int) -> StoredVectors:
    """Read ``features.safetensors`` for a predictions file of ``rows`` rows; :class:`DataError` (one
    line) for anything but finite float32 matrices of that many rows and a well-formed header."""
    from safetensors import safe_open

    name = Path(path).name
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("debias_bench") or "{}")
            keys = set(f.keys())
            if not isinstance(meta, dict) or meta.get("format") != VECTORS_FORMAT or \
                    not keys <= {"features", "embeddings", "texts"}:
                raise DataError(f"{name}: not a {VECTORS_FORMAT} file (format or tensor names)")
            arrays = {k: f.get_tensor(k) for k in sorted(keys)}
            texts = meta.get("texts", [])
    except DataError:
        raise
    except Exception as exc:  # safetensors and json raise several types for a corrupt file
        raise DataError(f"{name}: unreadable ({type(exc).__name__})") from None
    for k, a in arrays.items():
        if a.dtype != np.float32 or a.ndim != 2 or a.shape[1] == 0 or not np.isfinite(a).all():
            raise DataError(f"{name}: {k} must be a finite float32 matrix, got {a.dtype} {a.shape}")
        if k != "texts" and a.shape[0] != rows:
            raise DataError(f"{name}: {k} has {a.shape[0]} rows but the predictions have {rows}")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{name}: metadata texts must be a list of prompt texts")
    emb, txt = arrays.get("embeddings"), arrays.get("texts")
    if (emb is None) != (txt is None) or (txt is not None and (txt.shape != (len(texts), emb.shape[1]))):
        raise DataError(f"{name}: embeddings and texts must come together, one text row per prompt text")
    return StoredVectors(
        None if "features" not in arrays else arrays["features"].astype(np.float64),
        None if emb is None else emb.astype(np.float64),
        {} if txt is None else {t: txt[i].astype(np.float64) for i, t in enumerate(texts)},
        str(meta.get("features_fingerprint", "")), str(meta.get("embedder_fingerprint", "")))
