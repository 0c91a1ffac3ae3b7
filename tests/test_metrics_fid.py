"""FID / KID against direct numpy-scipy formulas, the statistics cache, and the Inception path (offline)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from benchmark.errors import DataError, ModelLoadError
from benchmark.metrics import (
    FeatureStats,
    FrechetDistance,
    InceptionFeatures,
    extract_features,
    fid_vs_baseline,
    fid_vs_reference,
    frechet_distance,
    kernel_distance,
    load_reference_stats,
    reference_stats,
)


class PixelStats:
    """Deterministic extractor: per-channel mean and std plus quadrant means of the grey image (10-d)."""

    fingerprint = "pixel-stats-v1"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        x = images.astype(np.float64) / 255.0
        grey = x.mean(axis=-1)
        h, w = grey.shape[1] // 2, grey.shape[2] // 2
        quads = [grey[:, :h, :w], grey[:, :h, w:], grey[:, h:, :w], grey[:, h:, w:]]
        return np.concatenate(
            [x.mean(axis=(1, 2)), x.std(axis=(1, 2)), np.stack([q.mean(axis=(1, 2)) for q in quads], 1)], axis=1
        )


def _images(seed: int, n: int = 40, shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.integers(0, 200, size=(n, 16, 16, 3)) + shift, 0, 255).astype(np.uint8)


def _direct_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_direct_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 8))
    b = rng.normal(loc=0.5, scale=1.5, size=(80, 8)) @ rng.normal(size=(8, 8))
    assert frechet_distance(a, b) == pytest.approx(_direct_fid(a, b), rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Shifting one set by v adds ‖v‖² exactly.
    v = np.arange(8) * 0.1
    assert frechet_distance(a, a + v) == pytest.approx((v**2).sum(), abs=1e-6)


def test_kernel_distance_matches_direct_unbiased_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 5)), rng.normal(loc=0.3, size=(30, 5))
    d, m = 5, 30

    def k(u, v):
        return (u @ v.T / d + 1) ** 3

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    direct = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    assert kernel_distance(x, y) == pytest.approx(direct, rel=1e-9)


def test_kernel_distance_is_the_exact_value_clean_fid_estimates_by_subsets():
    """clean-fid averages the same U-statistic over random subsets; its average over many subsets
    converges to the exact all-pairs value computed here (block by block, any block size)."""
    from cleanfid.fid import kernel_distance as subsets

    from benchmark.metrics import fid

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(120, 4)), rng.normal(loc=0.4, size=(150, 4))
    exact = kernel_distance(x, y)
    np.random.seed(0)
    estimate = subsets(x, y, num_subsets=2000, max_subset_size=60)
    assert estimate == pytest.approx(exact, rel=0.02)
    assert fid._kernel_sum(x, y, False, block=7) == pytest.approx(fid._kernel_sum(x, y, False), rel=1e-12)
    with pytest.raises(DataError, match="at least 2"):
        kernel_distance(x[:1], y)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_stats_roundtrip(tmp_path, suffix):
    feats = np.random.default_rng(3).normal(size=(20, 6))
    stats = FeatureStats.from_features(feats, "fp", key="ref-1")
    path = tmp_path / f"ref{suffix}"
    stats.save(path)
    if suffix == ".npz":
        np.load(path, allow_pickle=False).close()  # no object arrays inside
    back = FeatureStats.load(path)
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    np.testing.assert_array_equal(back.features, feats)
    assert (back.fingerprint, back.key, back.n) == ("fp", "ref-1", 20)


def test_reference_stats_cache_keyed_by_fingerprint(tmp_path):
    ext = PixelStats()
    path = tmp_path / "ref.safetensors"
    imgs = _images(0)
    first = reference_stats(imgs, ext, path, key="world-v1")
    calls = ext.calls

    def must_not_load():
        raise AssertionError("cache hit must not read the images")

    again = reference_stats(must_not_load, ext, path, key="world-v1")
    assert ext.calls == calls
    np.testing.assert_array_equal(again.sigma, first.sigma)
    # A different extractor fingerprint or reference key invalidates the cache.
    other = PixelStats()
    other.fingerprint = "pixel-stats-v2"
    reference_stats(lambda: [imgs[:20], imgs[20:]], other, path, key="world-v1")
    assert other.calls == 2
    assert FeatureStats.load(path).fingerprint == "pixel-stats-v2"
    reference_stats(imgs, other, path, key="world-v2")
    assert other.calls == 3


def test_fid_variants():
    ext = PixelStats()
    base, same, shifted = _images(1), _images(1), _images(1, shift=40)
    assert fid_vs_baseline(same, base, ext)["fid"] == pytest.approx(0.0, abs=1e-9)
    moved = fid_vs_baseline(shifted, base, ext, kid=True)
    direct = _direct_fid(ext(shifted), ext(base))
    assert moved["fid"] == pytest.approx(direct, rel=1e-8) and moved["fid"] > 0.01
    assert moved["kid"] > 0
    ref = reference_stats(_images(2, n=60), ext)
    out = fid_vs_reference(shifted, ext, ref, kid=True)
    assert out["fid"] == pytest.approx(_direct_fid(ext(shifted), ext(_images(2, n=60))), rel=1e-8)
    stream = FrechetDistance(ext, ref)
    for chunk in np.array_split(shifted, 3):
        stream.update(chunk)
    assert stream.compute() == pytest.approx(out["fid"], rel=1e-10)


def test_fid_input_errors():
    ext = PixelStats()
    ref = FeatureStats.from_features(ext(_images(3)), "another-extractor")
    with pytest.raises(DataError, match="extractor"):
        fid_vs_reference(_images(4), ext, ref)
    with pytest.raises(DataError, match="uint8"):
        extract_features(np.zeros((2, 8, 8, 3), dtype=np.float32), ext)
    with pytest.raises(DataError, match="at least 2"):
        frechet_distance(np.ones((1, 3)), np.ones((5, 3)))
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(np.full((3, 3), np.nan), np.ones((5, 3)))
    with pytest.raises(DataError, match="same prompts"):
        fid_vs_baseline(_images(1, n=5), _images(1, n=6), ext)
    with pytest.raises(DataError, match="empty"):
        extract_features([], ext)


def test_inception_missing_weights_is_one_line_model_load_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DEBIAS_BENCH_INCEPTION_DIR", raising=False)
    with pytest.raises(ModelLoadError, match="inception-2015-12-05.pt") as err:
        InceptionFeatures(weights_dir=tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_inception_path_runs_clean_fid_code_on_local_torchscript(tmp_path):
    """A stand-in TorchScript file with clean-fid's layout exercises the real load/resize/forward path."""
    import torch
    from doubles import save_stand_in_inception

    base = save_stand_in_inception(tmp_path / "inception-2015-12-05.pt")
    ext = InceptionFeatures(weights_dir=tmp_path, batch_size=2)
    imgs = _images(5, n=3)
    feats = ext(imgs)
    assert feats.shape == (3, 2048)
    # clean-fid normalises [0, 255] to [-1, 1] before the network; a constant image keeps its value on resize.
    grey = np.full((1, 20, 20, 3), 255, dtype=np.uint8)
    with torch.no_grad():
        expected = base.layers.proj(torch.full((1, 3), (255 - 128) / 128)).numpy()
    np.testing.assert_allclose(ext(grey), expected, rtol=1e-5, atol=1e-5)
    assert ext.fingerprint.startswith("clean-fid-inception:")


def test_precomputed_reference_statistics(tmp_path):
    """clean-fid's mu/sigma .npz and this project's stats files give the same FID as the images would."""
    ext = PixelStats()
    ref_images, gen = _images(2, n=60), _images(1, shift=40)
    expected = fid_vs_reference(gen, ext, reference_stats(ref_images, ext))["fid"]
    feats = ext(ref_images)
    cleanfid_file = tmp_path / "ref_clean.npz"  # what cleanfid.fid.make_custom_stats writes
    np.savez_compressed(cleanfid_file, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    loaded = load_reference_stats(cleanfid_file, ext)
    assert loaded.features is None and loaded.key.startswith("file:")
    out = fid_vs_reference(gen, ext, loaded, kid=True)
    assert out == {"fid": pytest.approx(expected, rel=1e-10)}  # no features: no KID, not a wrong KID
    ours = tmp_path / "ref.safetensors"
    reference_stats(ref_images, ext).save(ours)
    assert fid_vs_reference(gen, ext, load_reference_stats(ours, ext))["fid"] == pytest.approx(expected, rel=1e-10)


def test_precomputed_reference_statistics_errors(tmp_path):
    ext = PixelStats()
    with pytest.raises(DataError, match="not found"):
        load_reference_stats(tmp_path / "missing.npz", ext)
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(10))
    with pytest.raises(DataError, match="'mu' and 'sigma'"):
        load_reference_stats(bad, ext)
    np.savez(bad, mu=np.zeros(10), sigma=np.zeros((9, 9)))
    with pytest.raises(DataError, match="not a mean and its covariance"):
        load_reference_stats(bad, ext)
    other = tmp_path / "other.safetensors"
    reference_stats(_images(2), ext).save(other)

    class Other(PixelStats):
        fingerprint = "other-extractor"

    with pytest.raises(DataError, match="computed with extractor"):
        load_reference_stats(other, Other())
    np.savez(bad, mu=np.zeros(4), sigma=np.eye(4))  # 4-d statistics, 10-d features
    with pytest.raises(DataError, match="dimensions differ"):
        fid_vs_reference(_images(1), ext, load_reference_stats(bad, ext))


def test_paired_fid_delta_is_zero_for_the_same_images_and_positive_for_moved_ones() -> None:
    from benchmark.metrics.fid import BOOT_MAX_DIM, FeatureStats, paired_fid_delta

    rng = np.random.default_rng(1)
    ref = FeatureStats.from_features(rng.normal(size=(600, 6)))
    base = rng.normal(size=(300, 6))
    value, (low, high), p = paired_fid_delta(base, base, ref, [100, 100, 100], n_boot=100)
    assert value == 0.0 and low == high == 0.0 and p == 1.0
    value, (low, high), p = paired_fid_delta(base + 0.3, base, ref, [100, 100, 100], n_boot=100)
    assert value > 0 and 0 < low <= value <= high and p < 0.05
    wide = rng.normal(size=(40, BOOT_MAX_DIM + 1))
    value, ci, p = paired_fid_delta(wide, wide, FeatureStats.from_features(rng.normal(size=(60, BOOT_MAX_DIM + 1))),
                                    [40], n_boot=10)
    assert ci is None and p is None
    with pytest.raises(DataError, match="strata"):
        paired_fid_delta(base, base[:200], ref, [300], n_boot=10)


def test_quality_records_give_delta_fid_against_the_baseline_paired_by_seed() -> None:
    from benchmark.metrics.fid import FeatureStats
    from benchmark.quality import Vectors, quality_records

    rng = np.random.default_rng(0)
    ref = FeatureStats.from_features(rng.normal(size=(80, 8)), "", keep_features=False)

    def vectors(shift: float) -> dict:
        return {pid: Vectors(tuple(range(20)), rng.normal(size=(20, 8)) + shift) for pid in ("a", "b")}

    base, moved = vectors(0.0), vectors(0.8)
    recs = {(r["metric"], r["variant"]): r for r in quality_records(moved, base, ref, n_boot=50, seed=0)}
    assert set(recs) == {("fid", "vs-reference"), ("fid", "vs-baseline"), ("kid", "vs-baseline"),
                         ("delta_fid", "vs-reference")}  # no KID against statistics without features
    rec = recs["delta_fid", "vs-reference"]
    assert rec["n"] == 40 and rec["value"] > 0 and rec["ci_low"] <= rec["value"] <= rec["ci_high"]
    assert 0 < rec["p_value"] <= 1
    moved["a"].seeds = tuple(range(1, 21))  # not paired: no record rather than a wrong one
    assert "delta_fid" not in {r["metric"] for r in quality_records(moved, base, ref, n_boot=50, seed=0)}


@pytest.mark.parametrize("d", [5, 130])  # the moments path (d <= 128) and the gathering one
def test_the_batched_resample_fid_equals_clean_fids_formula(d: int) -> None:
    from benchmark.metrics.fid import FeatureStats, _resampled_fid, frechet_distance

    rng = np.random.default_rng(3)
    ref = FeatureStats.from_features(rng.normal(size=(600, d)) @ rng.normal(size=(d, d)))
    feats = rng.normal(size=(400, d)) + 0.2
    idx = rng.integers(0, 400, size=(7, 400))
    fast = _resampled_fid(feats, idx, ref, chunk=3)
    slow = [frechet_distance(FeatureStats.from_features(feats[i]), ref) for i in idx]
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-8)


def test_the_baselines_resamples_are_computed_once_for_every_method(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.metrics import fid

    rng = np.random.default_rng(5)
    ref = fid.FeatureStats.from_features(rng.normal(size=(300, 4)))
    base = rng.normal(size=(100, 4))
    methods = [base + 0.3, base - 0.2, base * 1.1]
    first = [fid.paired_fid_delta(m, base, ref, [50, 50], n_boot=30) for m in methods]
    calls = []
    real = fid._resampled_fid
    monkeypatch.setattr(fid, "_resampled_fid", lambda f, i, r, **kw: calls.append(f) or real(f, i, r, **kw))
    fid._RESAMPLED.clear()
    again = [fid.paired_fid_delta(m, base, ref, [50, 50], n_boot=30) for m in methods]
    assert again == first  # the same numbers
    assert sum(f is base for f in calls) == 1 and len(calls) == 4  # the baseline's side once, each method's once


@pytest.mark.parametrize("seed", range(6))
def test_the_vendored_frechet_distance_is_clean_fids_bit_for_bit(seed: int) -> None:
    """frechet_distance runs a copy of cleanfid.fid.frechet_distance (importing clean-fid's module costs
    seconds of torchvision import): the copy must give the installed clean-fid's bits, also where the
    product is singular (few rows: clean-fid's regularised branch)."""
    import contextlib
    import io

    from cleanfid.fid import frechet_distance as clean_fid

    from benchmark.metrics.fid import _cleanfid_frechet_distance

    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 70))
    for rows in (d // 2 + 1, 5 * d):
        a, b = rng.normal(size=(rows, d)), rng.normal(size=(rows, d)) * 1.3 + 0.2
        args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
        with contextlib.redirect_stdout(io.StringIO()):
            assert repr(float(_cleanfid_frechet_distance(*args))) == repr(float(clean_fid(*args)))


def test_remembered_kernel_sums_give_the_same_kid() -> None:
    """KID's self-sums are remembered by their inputs' bytes (shared by a run's KIDs against the
    reference and the baseline): the values equal a fresh computation, and other inputs are not mixed up."""
    from benchmark.metrics import fid

    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)) + 0.1, rng.normal(size=(35, 8))
    fid._KERNEL_SUMS.clear()
    fresh = [fid._kernel_sum(a, a, True) / (40 * 39) + fid._kernel_sum(x, x, True) / (len(x) * (len(x) - 1))
             - 2.0 * fid._kernel_sum(a, x, False) / (40 * len(x)) for x in (b, c)]
    assert [kernel_distance(a, b), kernel_distance(a, c)] == fresh
    assert [kernel_distance(a, b), kernel_distance(a, c)] == fresh  # served from the memo
    other = fid._kernel_sum(c, c, True) / (35 * 34) + fid._kernel_sum(b, b, True) / (30 * 29) \
        - 2.0 * fid._kernel_sum(c, b, False) / (35 * 30)
    assert kernel_distance(c, b) == other  # a's sums are not taken for c's
