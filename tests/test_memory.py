"""The recording memory check (benchmark.memory) at Stable Diffusion 1.5's real sizes, and SelfDebias
stopping after its first recorded chunk when its recordings cannot fit."""

from __future__ import annotations

import pytest

from benchmark.errors import ConfigError
from benchmark.memory import available_memory, check_recording_fits

SD15_H = 50 * 1280 * 8 * 8 * 4  # bytes of one image's h over 50 steps at 512 px, float32: 16.4 MB


def test_the_check_names_the_need_and_the_largest_setting_that_fits() -> None:
    with pytest.raises(ConfigError) as err:  # DiffLens's world default on the occupations: 48 × 134 images
        check_recording_fits("difflens", SD15_H, 48 * 134, 3, 134, "samples_per_prompt", 64 * 10**9)
    message = str(err.value)
    assert "\n" not in message and "316.1 GB" in message and "16.4 MB per image, held 3 times" in message
    assert "set samples_per_prompt to 9 or fewer for 134 prompts" in message  # 9 × 134 × 3 × 16.4 MB = 59.3 GB
    check_recording_fits("difflens", SD15_H, 9 * 134, 3, 134, "samples_per_prompt", 64 * 10**9)
    check_recording_fits("difflens", SD15_H, 48 * 134, 3, 134, "samples_per_prompt", None)  # unknown: no check
    with pytest.raises(ConfigError, match="not one image per prompt fits for 134 prompts"):
        check_recording_fits("difflens", SD15_H, 134, 3, 134, "samples_per_prompt", 10**9)


def test_available_memory_is_known_here_and_plausible() -> None:
    free = available_memory()
    assert free is None or 0 < free < 2**50


def test_selfdebias_stops_after_its_first_chunk_when_its_recordings_cannot_fit(monkeypatch, tmp_path) -> None:
    import methods.selfdebias as selfdebias
    from benchmark.tiny import tiny_sd_components
    from methods.base import MethodData

    chunks = []
    original = selfdebias.sample
    monkeypatch.setattr(selfdebias, "sample", lambda *a, **k: chunks.append(1) or original(*a, **k))
    monkeypatch.setattr(selfdebias, "available_memory", lambda: 1000)
    method = selfdebias.SelfDebias(selfdebias.SelfDebiasParams(num_samples=128))
    data = MethodData(prompts=["a photo of a doctor", "a photo of a nurse"], embedder=object())
    with pytest.raises(ConfigError, match="selfdebias: recording h for 256 vanilla images"):
        method.prepare(tiny_sd_components(seed=0), data, tmp_path)
    assert chunks == [1]  # 128 samples are two chunks of 64: stopped after the first
