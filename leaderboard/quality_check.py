"""The submission check for everything that is not a fairness number.

FID, KID, ΔFID, CLIP-T, ΔCLIP-T and CLIP-I are recomputed from the bundle's ``features.safetensors``
(each image's FID features and CLIP image embedding, each prompt's text embedding) with
:func:`benchmark.quality.quality_records`, the function the run scored them with. For a profile the
project registers (the world), the extractors' fingerprints must be the registered ones, the
reference statistics and prompt embeddings come from the registered models, and the thumbnails are
spot-checked: their features, embeddings and attribute predictions, recomputed from the pictures,
must match their rows. What cannot be recomputed (a reference the project does not hold, cost) is
accepted as *reported* and listed in the entry; any other record is refused.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.errors import DataError
from benchmark.quality import FEATURES_FILE, StoredVectors, Vectors, load_vectors, quality_records

# Every (metric, variant) a run writes that is not a fairness record.
QUALITY = {("fid", "vs-reference"), ("kid", "vs-reference"), ("delta_fid", "vs-reference"), ("fid", "vs-baseline"),
           ("kid", "vs-baseline"), ("clip_t", "mean"), ("delta_clip_t", "mean"), ("clip_i", "vs-baseline")}
COST = {("unet_evals", "per-image"), ("unet_evals", "vs-baseline")}
REL_TOL, ABS_TOL = 1e-6, 1e-9
# Records against the reference use the checker's own reference features, whose float32 last bits
# depend on the CPU: they are compared within this relative tolerance (a p-value within P_TOL).
REF_REL_TOL, P_TOL = 1e-3, 0.02
# Thumbnails recomputed from their pixels against their rows: float32 features and model outputs
# may differ in the last bits across CPUs and batch sizes, never by this much.
SPOT_TOL = 1e-3


@dataclass
class QualityVerdict:
    verified: int = 0
    reported: list[str] = field(default_factory=list)  # "metric/variant" accepted as reported
    thumbnails_checked: int = 0


@dataclass
class RegisteredWorld:
    features: Any
    embedder: Any
    reference: Any
    classifiers: dict[str, Any]


_WORLD: dict[str, RegisteredWorld] = {}
_CLASSIFIERS: dict[str, Any] = {}


def _registered_classifiers(names: Any) -> dict[str, Any]:
    from classifiers import CLASSIFIERS

    for name in names:
        if name in CLASSIFIERS.names() and name not in _CLASSIFIERS:
            _CLASSIFIERS[name] = CLASSIFIERS.get(name)()
    return {n: _CLASSIFIERS[n] for n in names if n in _CLASSIFIERS}


def registered_world(results: dict[str, Any]) -> RegisteredWorld | None:
    """The registered extractors, reference and classifiers of a world-profile bundle (None for other
    profiles; no reference when the run used its own ``reference_stats``). Loads only the world's CLIP,
    reference renders and the bundle's registered classifiers, not its generator."""
    profile = str(results.get("models", {}).get("profile") or "")
    if not profile.startswith("world:"):
        return None
    variant = profile.split(":", 1)[1]
    if variant not in _WORLD:
        from benchmark.metrics.fid import reference_stats
        from benchmark.world import load_world_config, weights_dir
        from benchmark.world.data import reference_set
        from benchmark.world.features import WorldFeatures, world_embedder

        try:
            config = load_world_config(variant)
        except Exception:  # a made-up variant would otherwise escape every registered check
            raise DataError(f"models.profile: {profile[:60]!r} is not a world variant this leaderboard knows") from None
        embedder = world_embedder(weights_dir(variant))
        features = WorldFeatures(embedder)
        ref = reference_set(config, lazy=True)  # rendered only when its statistics are not kept yet
        # kept between checks on this machine, keyed by the extractor's and the reference set's hashes
        cached = _user_cache() / "reference" / f"{features.fingerprint[:16]}-{ref.fingerprint[:16]}.safetensors"
        try:
            reference = reference_stats(lambda: [ref.images], features, cache_path=cached, key=ref.fingerprint)
        except OSError:
            reference = reference_stats(ref.images, features, key=ref.fingerprint)
        _WORLD[variant] = RegisteredWorld(features, embedder, reference, {})
    world = _WORLD[variant]
    own_reference = bool(results.get("config", {}).get("reference_stats"))
    return RegisteredWorld(world.features, world.embedder, None if own_reference else world.reference,
                           _registered_classifiers(results.get("models", {}).get("classifiers", {})))


def _user_cache() -> Path:
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "debias-bench"


def _close(a: Any, b: Any, field: str = "value", against_reference: bool = False) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if against_reference:
        if field == "p_value":
            return abs(float(a) - float(b)) <= P_TOL
        return math.isclose(float(a), float(b), rel_tol=REF_REL_TOL, abs_tol=ABS_TOL)
    return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _cells(pred: pd.DataFrame, stored: StoredVectors, texts: dict[tuple[str, str], str]) -> dict[tuple[str, str], dict]:
    """(method, prompt set) → prompt id → :class:`Vectors`, rows in index order, prompts in file order."""
    out: dict[tuple[str, str], dict[str, Vectors]] = {}
    order = pred.reset_index(drop=True)
    for (method, ps, pid), part in order.groupby(["method", "prompt_set", "prompt_id"], sort=False):
        part = part.sort_values("index", kind="stable")
        rows = part.index.to_numpy()
        text = texts.get((str(ps), str(pid)))
        emb = None if stored.embeddings is None else stored.embeddings[rows]
        vec = Vectors(tuple(int(s) for s in part["seed"]), None if stored.features is None else stored.features[rows],
                      emb, stored.texts.get(text) if text is not None else None)
        out.setdefault((str(method), str(ps)), {})[str(pid)] = vec
    return out


def recompute(results: dict[str, Any], pred: pd.DataFrame, stored: StoredVectors, reference: Any) -> list[dict]:
    """Every quality record the bundle's vectors support, labelled like the run's."""
    cfg = results["config"].get("metrics", {})
    n_boot, seed = int(cfg.get("bootstrap", 1000)), int(cfg.get("seed", 0))
    baseline = str(results["config"].get("baseline") or "baseline")
    texts = {(ps, p["id"]): p["text"] for ps, meta in results["prompt_sets"].items() for p in meta.get("prompts", [])}
    cells = _cells(pred, stored, texts)
    out = []
    for (method, ps), mine in cells.items():
        base = cells.get((baseline, ps))
        comparable = base if method != baseline and base is not None and len(base) == len(mine) else None
        for rec in quality_records(mine, comparable, reference, n_boot, seed):
            out.append({**rec, "method": method, "prompt_set": ps})
    return out


def _key(rec: dict[str, Any]) -> tuple:
    return (rec.get("method"), rec.get("prompt_set"), rec.get("prompt_id"), rec.get("metric"), rec.get("variant"))


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(path.read_bytes())) as im:
        return np.asarray(im.convert("RGB"))


def spot_check(root: Path, manifest: dict[str, Any], pred: pd.DataFrame, stored: StoredVectors,
               world: RegisteredWorld) -> int:
    """Recompute each thumbnail's features, embedding and predictions from its pixels and compare them
    with its row; returns how many thumbnails were checked."""
    where = {(str(m), str(ps), str(p), int(i)): r for r, (m, ps, p, i) in
             enumerate(zip(pred["method"], pred["prompt_set"], pred["prompt_id"], pred["index"], strict=True))}
    picked = [(t["file"], where.get((t.get("method"), t.get("prompt_set"), t.get("prompt_id"), t.get("index"))))
              for t in manifest.get("thumbnails", [])]
    picked = [(f, r) for f, r in picked if r is not None]
    if not picked:
        return 0
    images = [_png(root / f) for f, _ in picked]
    if len({im.shape for im in images}) != 1:
        raise DataError("thumbnails: images of different sizes")
    batch, rows = np.stack(images), np.array([r for _, r in picked])
    checks: list[tuple[str, np.ndarray, np.ndarray]] = []
    tower = None
    if stored.features is not None and stored.embeddings is not None and getattr(world.features, "embedder", None) \
            is world.embedder:
        tower = _image_tower(world.embedder, batch)  # features and embeddings from one pass of the same tower
    if stored.features is not None:
        fresh = tower.double().numpy() if tower is not None else np.asarray(world.features(batch))
        checks.append(("FID features", fresh, stored.features[rows]))
    if stored.embeddings is not None:
        if tower is not None:
            import torch

            fresh = torch.nn.functional.normalize(tower.float(), dim=-1).numpy().astype(np.float32)
        else:
            fresh = np.asarray(world.embedder.encode_images(batch))
        checks.append(("CLIP embeddings", fresh, stored.embeddings[rows]))
    for name, clf in world.classifiers.items():
        for attr, probs in clf.predict(batch).items():
            cols = [f"{name}/{attr}/{c}" for c in clf.attributes[attr]]
            if all(c in pred.columns for c in cols):
                checks.append((f"{name} {attr} predictions", np.asarray(probs), pred[cols].to_numpy()[rows]))
    for what, fresh, claimed in checks:
        scale = np.maximum(np.abs(fresh).max(axis=1, keepdims=True), 1.0)
        bad = np.flatnonzero((np.abs(fresh - claimed) > SPOT_TOL * scale).any(axis=1))
        if len(bad):
            f = picked[bad[0]][0]
            raise DataError(f"{f}: its {what} recomputed from the picture do not match its row "
                            f"({len(bad)} of {len(picked)} thumbnails differ)")
    return len(picked)


def _image_tower(embedder: Any, images: np.ndarray) -> Any:
    """The CLIP image tower's output for ``images`` (a float tensor): what the world's FID features
    (:class:`benchmark.world.features.WorldFeatures`) and, normalised, its CLIP embeddings are made of."""
    import torch

    with torch.no_grad():
        return torch.cat([embedder.model.encode_image(embedder.preprocess(images[i:i + 1024]))
                          for i in range(0, len(images), 1024)])


def check_quality(root: Path, results: dict[str, Any], pred: pd.DataFrame, manifest: dict[str, Any]) -> QualityVerdict:
    """Recompute or classify every non-fairness record; raises :class:`DataError` naming the first
    record that is wrong, unknown or missing. Fairness records are checked elsewhere."""
    world = registered_world(results)
    path = root / FEATURES_FILE
    if not path.is_file() and world is not None:
        raise DataError(f"{FEATURES_FILE} is missing: bundles of the registered world profile must carry it")
    stored = load_vectors(path, len(pred)) if path.is_file() else None
    reference = None
    if stored is not None and world is not None:
        if stored.features is not None and stored.features_fingerprint != world.features.fingerprint:
            raise DataError(f"{FEATURES_FILE}: FID features were not made by the registered world CLIP")
        if stored.embeddings is not None and stored.embedder_fingerprint != world.embedder.fingerprint:
            raise DataError(f"{FEATURES_FILE}: CLIP embeddings were not made by the registered world CLIP")
        texts = list(stored.texts)
        encoded = np.asarray(world.embedder.encode_texts(texts), dtype=np.float64) if texts else []  # one batch
        for text, fresh in zip(texts, encoded, strict=True):
            if np.abs(fresh - stored.texts[text]).max() > SPOT_TOL:
                raise DataError(f"{FEATURES_FILE}: the text embedding of {text[:60]!r} is not the registered CLIP's")
        reference = world.reference
    fresh = {_key(r): r for r in recompute(results, pred, stored, reference)} if stored is not None else {}
    verdict = QualityVerdict()
    reported: set[str] = set()
    claimed = set()
    for i, rec in enumerate(results["metrics"]):
        pair = (rec.get("metric"), rec.get("variant"))
        if rec.get("classifier") is not None:
            continue  # fairness: recomputed from the predictions
        if pair in COST:
            reported.add("/".join(pair))
            continue
        if pair not in QUALITY:
            raise DataError(f"metrics[{i}]: {pair[0]}/{pair[1]} is not a metric this leaderboard can check")
        key = _key(rec)
        claimed.add(key)
        mine = fresh.get(key)
        if mine is None:
            if stored is not None and (pair[1] != "vs-reference" or reference is not None):
                raise DataError(f"metrics[{i}] ({'/'.join(str(k) for k in key)}) cannot be recomputed from "
                                f"{FEATURES_FILE}")
            reported.add("/".join(pair))  # no vectors, or a reference the leaderboard does not hold
            continue
        for name in ("value", "ci_low", "ci_high", "p_value"):
            if not _close(rec.get(name), mine.get(name), name, pair[1] == "vs-reference"):
                raise DataError(f"metrics[{i}] ({'/'.join(str(k) for k in key)}): {name} {rec.get(name)} but "
                                f"{FEATURES_FILE} gives {mine.get(name)}")
        if rec.get("n") != mine.get("n"):
            raise DataError(f"metrics[{i}] ({'/'.join(str(k) for k in key)}): n differs from the recomputation")
        verdict.verified += 1
    claimed_pairs = {(k[0], k[1], k[3], k[4]) for k in claimed}
    for key in fresh:
        if (key[0], key[1], key[3], key[4]) in claimed_pairs and key not in claimed:
            raise DataError(f"{'/'.join(str(k) for k in key)} is computable from {FEATURES_FILE} but not reported")
    if stored is not None and world is not None:
        verdict.thumbnails_checked = spot_check(root, manifest, pred, stored, world)
        shown = {t.get("method") for t in manifest.get("thumbnails", [])}
        missing = sorted(set(pred["method"].astype(str)) - shown)
        if missing:  # without thumbnails a method's rows would escape the pixel check
            raise DataError(f"thumbnails: none for method {missing[0][:40]!r}; a world bundle shows at least one "
                            "per method, recomputed from its pixels")
    verdict.reported = sorted(reported)
    return verdict
