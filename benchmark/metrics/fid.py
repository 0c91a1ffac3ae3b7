"""Fréchet distance (FID) and kernel distance (KID) on features from any extractor, through clean-fid.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule...", NeurIPS 2017):
    FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})
computed by ``cleanfid.fid.frechet_distance`` (Parmar et al., "On Aliased Resizing and Surprising
Subtleties in GAN Evaluation", CVPR 2022). KID (Bińkowski et al., ICLR 2018) is the unbiased MMD² with
the cubic polynomial kernel k(x, y) = (xᵀy / D + 1)³, computed exactly over all images (the U-statistic
that clean-fid's average over random subsets estimates: deterministic, and about 50x faster here).

Variants (label them): ``vs-reference``, generated images against a reference image set (real images,
or the world's ground-truth renders); ``vs-baseline``, a method's images against the baseline's images
for the same prompts and seeds (SelfDebias-style).

A feature extractor is any callable uint8 (N, H, W, 3) → float (N, D) with a ``fingerprint`` string
attribute that changes whenever its features would; reference statistics are cached under it.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from benchmark.errors import DataError, ModelLoadError

STATS_FORMAT = "debias-bench/feature-stats/1"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_ENV = "DEBIAS_BENCH_INCEPTION_DIR"


class FeatureExtractor(Protocol):
    fingerprint: str

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) → float (N, D)."""
        ...


def _check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise DataError(f"{name}: expected uint8 images of shape (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def extract_features(
    images: np.ndarray | Iterable[np.ndarray], extractor: Callable[[np.ndarray], np.ndarray], batch_size: int = 64
) -> np.ndarray:
    """Features (N, D) float64 of uint8 images, given as one array or as an iterable of batches."""
    batches = (
        (images[i : i + batch_size] for i in range(0, len(images), batch_size))
        if isinstance(images, np.ndarray)
        else images
    )
    feats = []
    for batch in batches:
        batch = _check_images(batch)
        f = np.asarray(extractor(batch), dtype=np.float64)
        if f.ndim != 2 or f.shape[0] != batch.shape[0]:
            raise DataError(f"feature extractor returned shape {f.shape} for {batch.shape[0]} images; expected (N, D)")
        if not np.isfinite(f).all():
            raise DataError("feature extractor returned NaN or Inf features")
        feats.append(f)
    if not feats:
        raise DataError("extract_features: no images (empty input)")
    return np.concatenate(feats)


def _check_features(features: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise DataError(f"{name}: expected features of shape (N, D), got {f.shape}")
    if f.shape[0] < 2:
        raise DataError(f"{name}: need at least 2 images for a covariance, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise DataError(f"{name}: features contain NaN or Inf")
    return f


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of features (and optionally the features, for KID), tagged with the extractor."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    fingerprint: str
    features: np.ndarray | None = None
    key: str = ""  # identifies the image set (e.g. a hash of the reference images); "" when unnamed

    @classmethod
    def from_features(
        cls, features: np.ndarray, fingerprint: str = "", keep_features: bool = True, key: str = ""
    ) -> FeatureStats:
        f = _check_features(features, "features")
        return cls(f.mean(axis=0), np.cov(f, rowvar=False), f.shape[0], fingerprint, f if keep_features else None, key)

    def save(self, path: str | Path) -> None:
        """Write to ``.safetensors`` or ``.npz`` (no pickle), atomically."""
        path = Path(path)
        arrays = {"mu": self.mu, "sigma": self.sigma}
        if self.features is not None:
            arrays["features"] = self.features
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            meta = {"format": STATS_FORMAT, "fingerprint": self.fingerprint, "key": self.key, "n": str(self.n)}
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=meta)
        elif path.suffix == ".npz":
            np.savez(
                tmp,
                format=np.array(STATS_FORMAT),
                fingerprint=np.array(self.fingerprint),
                key=np.array(self.key),
                n=np.array(self.n),
                **arrays,
            )
        else:
            raise DataError(f"{path}: feature statistics are stored as .safetensors or .npz")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        path = Path(path)
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="np") as f:
                    meta = f.metadata() or {}
                    arrays = {k: f.get_tensor(k) for k in f.keys()}
                fmt, fingerprint, key = meta.get("format"), meta.get("fingerprint", ""), meta.get("key", "")
                n = int(meta.get("n", -1))
            elif path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                fmt, fingerprint = str(arrays.pop("format", "")), str(arrays.pop("fingerprint", ""))
                key, n = str(arrays.pop("key", "")), int(arrays.pop("n", -1))
            else:
                raise DataError(f"{path}: feature statistics are stored as .safetensors or .npz")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: unreadable feature statistics ({type(e).__name__}: {e})") from None
        if fmt != STATS_FORMAT or "mu" not in arrays or "sigma" not in arrays:
            raise DataError(f"{path}: not a {STATS_FORMAT} file")
        return cls(arrays["mu"], arrays["sigma"], n, fingerprint, arrays.get("features"), key)


def _as_stats(x: FeatureStats | np.ndarray, name: str) -> FeatureStats:
    return x if isinstance(x, FeatureStats) else FeatureStats.from_features(_check_features(x, name))


def _same_extractor(a: FeatureStats, b: FeatureStats) -> None:
    if a.fingerprint and b.fingerprint and a.fingerprint != b.fingerprint:
        raise DataError(
            f"feature statistics come from different extractors ({a.fingerprint[:12]} vs {b.fingerprint[:12]})"
        )


def _cleanfid_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """``cleanfid.fid.frechet_distance`` (clean-fid 0.1.35), line for line: importing ``cleanfid.fid``
    imports torchvision (seconds) for this one function. tests/test_metrics_fid.py checks that both
    give the same bits."""
    from scipy import linalg

    mu1 = np.atleast_1d(mu1)
    mu2 = np.atleast_1d(mu2)
    sigma1 = np.atleast_2d(sigma1)
    sigma2 = np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape, "Training and test mean vectors have different lengths"
    assert sigma1.shape == sigma2.shape, "Training and test covariances have different dimensions"
    diff = mu1 - mu2
    # Product might be almost singular
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        print(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    # Numerical error might give slight imaginary component
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"Imaginary component {m}")
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean


def frechet_distance(a: FeatureStats | np.ndarray, b: FeatureStats | np.ndarray) -> float:
    """FID between two feature sets (N, D) or their ``FeatureStats``, as ``cleanfid.fid.frechet_distance``
    computes it (:func:`_cleanfid_frechet_distance`)."""
    _fd = _cleanfid_frechet_distance
    sa, sb = _as_stats(a, "a"), _as_stats(b, "b")
    _same_extractor(sa, sb)
    if sa.mu.shape != sb.mu.shape:
        raise DataError(f"frechet_distance: feature dimensions differ ({sa.mu.shape[0]} vs {sb.mu.shape[0]})")
    # clean-fid prints a note when it regularises a singular product; metrics stay quiet.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        return float(_fd(sa.mu, sa.sigma, sb.mu, sb.sigma))


def _kernel_sum(x: np.ndarray, y: np.ndarray, exclude_diagonal: bool, block: int = 2048) -> float:
    """Σ k(x_i, y_j) with k(u, v) = (uᵀv / D + 1)³, in row blocks so memory stays O(block · N)."""
    d, total = x.shape[1], 0.0
    for lo in range(0, len(x), block):
        base = x[lo:lo + block] @ y.T / d + 1.0
        k = base * base
        k *= base  # a product, not ** 3: numpy's general power is about four times slower
        total += float(k.sum())
        if exclude_diagonal:
            total -= float(np.trace(k[:, lo:lo + block]))
    return total


def kernel_distance(a: FeatureStats | np.ndarray, b: FeatureStats | np.ndarray) -> float:
    """KID = unbiased MMD² with the cubic polynomial kernel between two feature sets, over all pairs:

        KID = Σ_{i≠j} k(a_i, a_j) / (n(n−1)) + Σ_{i≠j} k(b_i, b_j) / (m(m−1)) − 2 Σ_{i,j} k(a_i, b_j) / (nm)
    """
    fa = a.features if isinstance(a, FeatureStats) else _check_features(a, "a")
    fb = b.features if isinstance(b, FeatureStats) else _check_features(b, "b")
    if fa is None or fb is None:
        raise DataError("kernel_distance: statistics were stored without features (keep_features=False)")
    if isinstance(a, FeatureStats) and isinstance(b, FeatureStats):
        _same_extractor(a, b)
    if fa.shape[1] != fb.shape[1]:
        raise DataError(f"kernel_distance: feature dimensions differ ({fa.shape[1]} vs {fb.shape[1]})")
    n, m = len(fa), len(fb)
    if n < 2 or m < 2:
        raise DataError(f"kernel_distance: needs at least 2 images on each side, got {n} and {m}")
    fa, fb = np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64)
    return (_remembered_kernel_sum(fa, fa, True) / (n * (n - 1)) + _remembered_kernel_sum(fb, fb, True) / (m * (m - 1))
            - 2.0 * _remembered_kernel_sum(fa, fb, False) / (n * m))


_KERNEL_SUMS: dict[str, float] = {}


def _remembered_kernel_sum(x: np.ndarray, y: np.ndarray, exclude_diagonal: bool) -> float:
    """:func:`_kernel_sum`, remembered by the bytes of its inputs: a run's KIDs against the reference
    (every method) and against the baseline (every other method) share their self-sums."""
    import hashlib

    digest = hashlib.blake2b(digest_size=20)
    for part in (x, y):
        digest.update(f"{part.shape}{part.strides}|".encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    key = f"{digest.hexdigest()}{exclude_diagonal}"
    if key not in _KERNEL_SUMS:
        if len(_KERNEL_SUMS) >= 64:
            _KERNEL_SUMS.pop(next(iter(_KERNEL_SUMS)))
        _KERNEL_SUMS[key] = _kernel_sum(x, y, exclude_diagonal)
    return _KERNEL_SUMS[key]


def reference_stats(
    images: np.ndarray | Callable[[], Iterable[np.ndarray]],
    extractor: FeatureExtractor,
    cache_path: str | Path | None = None,
    key: str = "",
    keep_features: bool = True,
    batch_size: int = 64,
) -> FeatureStats:
    """Statistics of a reference image set, cached at ``cache_path`` (.safetensors or .npz).

    The cache is used only if it was written with the same extractor fingerprint and ``key`` (a hash of
    the reference images, chosen by the caller); otherwise it is recomputed and overwritten. ``images``
    may be a zero-argument callable yielding batches, so a cache hit never touches the images.
    """
    fingerprint = _fingerprint(extractor)
    if cache_path is not None and Path(cache_path).exists():
        cached = FeatureStats.load(cache_path)
        if (
            cached.fingerprint == fingerprint
            and cached.key == key
            and (cached.features is not None or not keep_features)
        ):
            return cached
    feats = extract_features(images if isinstance(images, np.ndarray) else images(), extractor, batch_size)
    stats = FeatureStats.from_features(feats, fingerprint, keep_features, key)
    if cache_path is not None:
        stats.save(cache_path)
    return stats


def _clean_fid_arrays(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(mu, sigma) of a clean-fid ``.npz``, checked; None for a file in this project's format."""
    if not path.is_file():
        raise DataError(f"{path}: reference statistics file not found")
    if path.suffix != ".npz":
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: unreadable feature statistics ({type(e).__name__}: {e})") from None
    if "format" in arrays:
        return None
    if "mu" not in arrays or "sigma" not in arrays:
        raise DataError(f"{path}: expected arrays 'mu' and 'sigma' (clean-fid statistics), got {sorted(arrays)}")
    mu, sigma = np.asarray(arrays["mu"], np.float64), np.asarray(arrays["sigma"], np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise DataError(f"{path}: 'mu' {mu.shape} and 'sigma' {sigma.shape} are not a mean and its covariance")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DataError(f"{path}: 'mu' or 'sigma' contains NaN or Inf")
    return mu, sigma


def check_stats_file(path: str | Path) -> None:
    """Read a reference statistics file as :func:`load_reference_stats` will (DataError naming the
    problem), without a feature extractor: the run config checks it before any work."""
    if _clean_fid_arrays(Path(path)) is None:
        stats = FeatureStats.load(path)
        if not (np.isfinite(stats.mu).all() and np.isfinite(stats.sigma).all()):
            raise DataError(f"{path}: 'mu' or 'sigma' contains NaN or Inf")


def load_reference_stats(path: str | Path, extractor: FeatureExtractor) -> FeatureStats:
    """Precomputed reference statistics: this project's files (``FeatureStats.save``) or clean-fid's
    ``.npz`` (arrays ``mu`` and ``sigma``, as ``cleanfid.fid.make_custom_stats`` writes them).

    A clean-fid file carries no extractor tag: it is taken to come from ``extractor`` (clean-fid's own
    files are Inception pool3, i.e. :class:`InceptionFeatures`), and its feature size is checked
    against the extractor's on first use. Without features, no KID can be computed against it.
    """
    from benchmark.hashing import hash_file

    path = Path(path)
    clean = _clean_fid_arrays(path)
    if clean is not None:
        return FeatureStats(clean[0], clean[1], -1, _fingerprint(extractor), None, "file:" + hash_file(path))
    stats = FeatureStats.load(path)
    fp = _fingerprint(extractor)
    if stats.fingerprint and stats.fingerprint != fp:
        raise DataError(f"{path}: statistics were computed with extractor {stats.fingerprint[:12]}, not {fp[:12]}")
    return stats


def _fingerprint(extractor: object) -> str:
    fp = getattr(extractor, "fingerprint", None)
    if not isinstance(fp, str) or not fp:
        raise DataError(
            f"feature extractor {type(extractor).__name__} has no 'fingerprint' string to key its statistics"
        )
    return fp


def fid_vs_reference(
    images: np.ndarray, extractor: FeatureExtractor, reference: FeatureStats, kid: bool = False
) -> dict[str, float]:
    """Variant ``vs-reference``: {"fid": ..., ["kid": ...]} of images against cached reference statistics."""
    fp = _fingerprint(extractor)
    if reference.fingerprint != fp:
        raise DataError(
            f"reference statistics were computed with extractor {reference.fingerprint[:12]}, not {fp[:12]}"
        )
    gen = FeatureStats.from_features(extract_features(images, extractor), reference.fingerprint)
    out = {"fid": frechet_distance(gen, reference)}
    if kid and reference.features is not None:  # precomputed statistics may carry no features
        out["kid"] = kernel_distance(gen, reference)
    return out


def fid_vs_baseline(
    images: np.ndarray, baseline_images: np.ndarray, extractor: FeatureExtractor, kid: bool = False
) -> dict[str, float]:
    """Variant ``vs-baseline``: {"fid": ..., ["kid": ...]} of a method's images against the baseline's
    images for the same prompts and seeds (pass them in the same order)."""
    a, b = _check_images(images), _check_images(baseline_images, "baseline_images")
    if a.shape[0] != b.shape[0]:
        raise DataError(
            f"vs-baseline: {a.shape[0]} images but {b.shape[0]} baseline images (same prompts and seeds expected)"
        )
    fa, fb = extract_features(a, extractor), extract_features(b, extractor)
    out = {"fid": frechet_distance(fa, fb)}
    if kid:
        out["kid"] = kernel_distance(fa, fb)
    return out


BOOT_MAX_DIM = 512  # above this feature width (Inception: 2048) each resample's matrix root takes seconds


def _resampled_fid(features: np.ndarray, idx: np.ndarray, reference: FeatureStats, chunk: int = 50) -> np.ndarray:
    """FID against ``reference`` of each resample ``features[idx[b]]``, batched: with R = √Σ_ref,
    tr √(Σ Σ_ref) = Σ √λ(R Σ R) (a symmetric eigenproblem), so no general matrix root per resample."""
    w, v = np.linalg.eigh(reference.sigma)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_ref = float(np.trace(reference.sigma))
    n, d = features.shape
    outer = (features[:, :, None] * features[:, None, :]).reshape(n, d * d) if d <= 128 else None
    out = []
    for start in range(0, len(idx), chunk):
        rows = idx[start:start + chunk]
        if outer is not None:  # moments from resample counts: two matrix products, no copy of each resample
            counts = np.stack([np.bincount(r, minlength=n) for r in rows]).astype(np.float64)
            mu = counts @ features / rows.shape[1]
            second = (counts @ outer).reshape(len(rows), d, d)
            cov = (second - rows.shape[1] * mu[:, :, None] * mu[:, None, :]) / (rows.shape[1] - 1)
        else:
            x = features[rows]  # (b, n, d)
            mu = x.mean(axis=1)
            centred = x - mu[:, None, :]
            cov = np.matmul(centred.transpose(0, 2, 1), centred) / (x.shape[1] - 1)
        eig = np.linalg.eigvalsh(root @ cov @ root)
        out.append(((mu - reference.mu) ** 2).sum(axis=1) + np.trace(cov, axis1=1, axis2=2) + trace_ref
                   - 2 * np.sqrt(np.clip(eig, 0, None)).sum(axis=1))
    return np.concatenate(out)


_RESAMPLED: dict[str, np.ndarray] = {}


def _remembered_resampled_fid(features: np.ndarray, idx: np.ndarray, reference: FeatureStats) -> np.ndarray:
    """:func:`_resampled_fid`, remembered by the bytes of its inputs: every method's ΔFID resamples the
    same baseline features with the same indices, so the baseline's side is computed once per run."""
    import hashlib

    digest = hashlib.blake2b(digest_size=20)
    for part in (features, idx, reference.mu, reference.sigma):
        digest.update(np.ascontiguousarray(part).tobytes())
        digest.update(str(part.shape).encode())
    key = digest.hexdigest()
    if key not in _RESAMPLED:
        if len(_RESAMPLED) >= 8:
            _RESAMPLED.pop(next(iter(_RESAMPLED)))
        _RESAMPLED[key] = _resampled_fid(features, idx, reference)
    return _RESAMPLED[key]


def paired_fid_delta(features: np.ndarray, baseline_features: np.ndarray, reference: FeatureStats,
                     strata: Sequence[int], n_boot: int, seed: int = 0,
                     level: float = 0.95) -> tuple[float, tuple[float, float] | None, float | None]:
    """FID(method) − FID(baseline) against ``reference`` for images paired by prompt and seed (row i of
    both arrays is the same prompt and seed): (value, percentile interval, two-sided p-value).

    The interval resamples pairs within each prompt (``strata``: row counts per prompt, in order), the
    same draw for both sides, so the images' shared seeds cancel as far as they can. It is skipped
    (None, None) for features wider than ``BOOT_MAX_DIM`` or without resamples: a matrix square root of
    the full width per resample would cost more than the run's scoring.

    >>> rng = np.random.default_rng(0)
    >>> ref = FeatureStats.from_features(rng.normal(size=(400, 4)))
    >>> base = rng.normal(size=(200, 4)); moved = base + 0.5
    >>> value, (low, high), p = paired_fid_delta(moved, base, ref, [100, 100], n_boot=200)
    >>> bool(value > 0 and low > 0 and p < 0.05)
    True
    """
    a = _check_features(features, "features")
    b = _check_features(baseline_features, "baseline_features")
    if a.shape != b.shape or sum(strata) != len(a):
        raise DataError(f"paired_fid_delta: {a.shape} and {b.shape} features for strata summing to {sum(strata)}")

    def fid(x: np.ndarray) -> float:
        return frechet_distance(FeatureStats.from_features(x, reference.fingerprint, keep_features=False), reference)

    value = fid(a) - fid(b)
    if n_boot < 1 or a.shape[1] > BOOT_MAX_DIM:
        return value, None, None
    from benchmark.metrics.bootstrap import percentile_interval, resample_indices, rng_for

    rng, starts = rng_for(seed, "delta_fid"), np.cumsum([0, *strata[:-1]])
    idx = np.concatenate([start + resample_indices(n, n_boot, rng) for start, n in zip(starts, strata, strict=True)
                          if n > 0], axis=1)
    samples = _resampled_fid(a, idx, reference) - _remembered_resampled_fid(b, idx, reference)
    low, high = percentile_interval(samples, level)
    b_n = len(samples)
    p = min(1.0, 2 * min((np.count_nonzero(samples <= 0) + 1) / (b_n + 1), (np.count_nonzero(samples >= 0) + 1) / (b_n + 1)))
    return float(value), (float(low), float(high)), float(p)


class FrechetDistance:
    """Streaming FID against fixed statistics (torchmetrics style): update(images) batches, compute()."""

    def __init__(self, extractor: FeatureExtractor, reference: FeatureStats) -> None:
        self.extractor, self.reference = extractor, reference
        self.reset()

    def reset(self) -> None:
        self._feats: list[np.ndarray] = []

    def update(self, images: np.ndarray) -> None:
        self._feats.append(extract_features(_check_images(images), self.extractor))

    def compute(self) -> float:
        if not self._feats:
            raise DataError("FrechetDistance.compute: no images were added with update()")
        gen = FeatureStats.from_features(np.concatenate(self._feats), self.reference.fingerprint, keep_features=False)
        return frechet_distance(gen, self.reference)


class InceptionFeatures:
    """clean-fid's default extractor: Inception-v3 pool3 (2048-d) of the TorchScript weights
    ``inception-2015-12-05.pt``, images resized to 299 with clean-fid's "clean" PIL-bicubic resizer.

    The weights are looked up, never downloaded: in ``weights_dir``, else ``$DEBIAS_BENCH_INCEPTION_DIR``,
    else /tmp (where clean-fid itself saves them).
    """

    def __init__(self, weights_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 32) -> None:
        folder = Path(weights_dir or os.environ.get(INCEPTION_ENV) or "/tmp")
        path = folder / INCEPTION_FILE
        if not path.is_file():
            raise ModelLoadError(
                f"Inception weights not found at {path}: put {INCEPTION_FILE} ({INCEPTION_URL}) there or set {INCEPTION_ENV}"
            )
        import torch
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer

        from benchmark.hashing import hash_file

        try:
            self.model = InceptionV3W(str(folder), download=False).to(device).eval()
        except RuntimeError as e:
            raise ModelLoadError(f"{path}: cannot load TorchScript Inception ({str(e).splitlines()[0]})") from None
        self.fingerprint = "clean-fid-inception:" + hash_file(path)
        self._resize = build_resizer("clean")
        self._torch, self.device, self.batch_size = torch, device, batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images)
        torch = self._torch
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = np.stack([self._resize(img) for img in images[i : i + self.batch_size]])
            x = torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()).float().to(self.device)
            with torch.no_grad():
                out.append(self.model(x).cpu().numpy())
        return np.concatenate(out).astype(np.float64)
