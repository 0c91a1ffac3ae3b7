"""The content-addressed cache: round trips, corruption detection, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmark.cache import Cache
from benchmark.errors import CacheError


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def test_image_round_trip_and_key_sensitivity(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    key = cache.image_key("m1", "a photo", 3, {"steps": 4})
    assert key != cache.image_key("m1", "a photo", 4, {"steps": 4})
    assert key != cache.image_key("m2", "a photo", 3, {"steps": 4})
    assert key != cache.image_key("m1", "a photo", 3, {"steps": 5})
    assert cache.get_image(key) is None
    sha = cache.put_image(key, _image(0))
    image, got_sha, seconds = cache.get_image(key)
    np.testing.assert_array_equal(image, _image(0))
    assert got_sha == sha and seconds is None
    cache.put_image(key, _image(0), seconds=0.25)
    assert cache.get_image(key).seconds == 0.25  # the generation time travels with the image


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop-hash"])
def test_corrupt_image_entry_is_detected_and_discarded(tmp_path: Path, damage: str) -> None:
    cache = Cache(tmp_path)
    key = cache.image_key("m", "p", 1, {})
    cache.put_image(key, _image(1))
    png = next(tmp_path.rglob("*.png"))
    if damage == "truncate":
        png.write_bytes(png.read_bytes()[:20])
    elif damage == "flip":
        data = bytearray(png.read_bytes())
        data[-5] ^= 0xFF
        png.write_bytes(bytes(data))
    else:
        png.with_suffix(".json").unlink()
    assert cache.get_image(key) is None
    if damage != "drop-hash":
        assert cache.corrupt_entries == 1 and not png.exists()


def test_predictions_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    payload = {"probs": {"tone": [0.25, 0.75]}, "subject": True}
    cache.put_predictions("clf", "ab" * 32, payload)
    assert cache.get_predictions("clf", "ab" * 32) == payload
    path = next(tmp_path.rglob("*.json"))
    path.write_text(path.read_text().replace("0.25", "0.35"))
    assert cache.get_predictions("clf", "ab" * 32) is None


def test_no_temporary_files_left_behind(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for i in range(5):
        cache.put_image(cache.image_key("m", "p", i, {}), _image(i))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_cache_gives_clear_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(CacheError, match="cannot write"):
            Cache(ro).put_image("ab" * 32, _image(0))
    finally:
        ro.chmod(0o700)


def test_disk_memo_computes_each_image_array_once_and_recovers_from_a_bad_file(tmp_path) -> None:
    import numpy as np

    from benchmark.cache import CachedImageEncoder, DiskMemo

    calls = []

    def embed(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return images.reshape(len(images), -1)[:, :4].astype(np.float64)

    memo = DiskMemo(embed, "fp-1", tmp_path / "emb")
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    first = memo(images)
    again = DiskMemo(embed, "fp-1", tmp_path / "emb")(images)  # another process: read from disk
    assert calls == [2] and np.array_equal(first, again)
    DiskMemo(embed, "fp-2", tmp_path / "emb")(images)  # another extractor: its own entry
    assert calls == [2, 2]
    for stored in (tmp_path / "emb").rglob("*.npy"):
        stored.write_bytes(b"not an array")
    assert np.array_equal(memo(images), first) and calls == [2, 2, 2]  # recomputed, not trusted

    class Embedder:
        fingerprint = "clip-x"

        def encode_images(self, images):
            return embed(images)

        def encode_texts(self, texts):
            return np.ones((len(texts), 4))

    cached = CachedImageEncoder(Embedder(), tmp_path / "clip")
    cached.encode_images(images)
    cached.encode_images(images)
    assert calls == [2, 2, 2, 2] and cached.encode_texts(["a"]).shape == (1, 4) and cached.fingerprint == "clip-x"


@pytest.mark.parametrize("damage", ["flip", "drop-hash", "wrong-length"])
def test_cell_entries_round_trip_and_a_damaged_one_is_a_miss(tmp_path: Path, damage: str) -> None:
    cache = Cache(tmp_path)
    keys = [f"k{i}" for i in range(3)]
    images = np.stack([_image(i) for i in range(3)])
    cache.put_cell_images(keys, images, ["a" * 64, "b" * 64, "c" * 64], [0.5, None, 0.25])
    got = cache.get_cell_images(keys)
    assert got is not None and np.array_equal(got[0], images) and got[1] == ["a" * 64, "b" * 64, "c" * 64]
    assert got[2] == [0.5, None, 0.25]
    assert cache.get_cell_images(keys[:2]) is None  # another cell
    probs = {"p.color": np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]]), "subject": np.array([True, False, True])}
    cache.put_cell_predictions("clf", got[1], probs)
    back = cache.get_cell_predictions("clf", got[1])
    assert back is not None and np.array_equal(back["p.color"], probs["p.color"]) and back["subject"].tolist() == [True, False, True]
    assert cache.get_cell_predictions("other-clf", got[1]) is None
    (path,) = list((tmp_path / "cells" / "images").rglob("*.npz"))
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "drop-hash":
        path.with_suffix(".json").unlink()
    else:  # the same key holding two images for three keys
        cache._write_cell(path, {"images": images[:2], "shas": np.array(["a" * 64, "b" * 64]),
                                 "seconds": np.array([0.5, np.nan])})
    assert cache.get_cell_images(keys) is None


def test_large_images_are_not_copied_into_cell_entries(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    big = np.zeros((2, 128, 128, 3), dtype=np.uint8)  # 48 KiB each: the per-image PNGs are the only copy
    cache.put_cell_images(["a", "b"], big, ["a" * 64, "b" * 64], [None, None])
    assert cache.get_cell_images(["a", "b"]) is None and not (tmp_path / "cells").exists()
