"""Every method prepared and sampled on Stable Diffusion 1.5 and SDXL at their published shapes (random weights,
benchmark.full_shape) through the real profile's loader, at 256 px with a few steps: any shape, dtype
or device fault of a method at real scale fails here. Slow (SD 1.5 about 8 minutes on 2 cores, SDXL about
40); each method runs in its own process through `debias-bench perf --model`'s code, which prints its
times and peak memory (docs/gpu.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmark.full_shape import SD15_UNET, build_pipeline


def test_the_published_shapes_are_the_ones_built() -> None:
    """No download: the configuration alone, checked against the numbers the papers and model cards give."""
    from diffusers import UNet2DConditionModel

    with __import__("torch").device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 859.5
    assert unet.config.block_out_channels[-1] == 1280 and unet.config.cross_attention_dim == 768


def _drive(kind: str, method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """One method prepared and sampled in its own process by `debias-bench perf --model`'s code, at
    256 px with one image after a warm-up image; its row (times, peak memory, shapes) is printed."""
    from benchmark.perf_real import measure

    monkeypatch.setenv("DEBIAS_BENCH_RANDOM_MODELS", os.environ.get("DEBIAS_BENCH_RANDOM_MODELS", str(tmp_path.parent)))
    [row] = measure(kind, [method], 256, 2, batch_size=1, images=1, repeats=1, timeout=3600)
    print(json.dumps(row))
    assert "error" not in row, row["error"]
    return row


@pytest.mark.slow
@pytest.mark.parametrize("method", ["baseline", "ddm", "invdiff", "selfdebias", "difflens"])
def test_method_runs_at_sd15_shapes(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _drive("sd15-random", method, tmp_path, monkeypatch)
    assert result["unet_parameters_m"] == 859.5 and result["mid_block_channels"] == 1280


@pytest.mark.slow
@pytest.mark.parametrize("method", ["baseline", "ddm", "invdiff", "selfdebias", "difflens"])
def test_method_runs_at_sdxl_shapes(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SDXL base (13 GB of weights in float32): about 40 minutes for all five and up to 23 GB of memory
    (InvDiff); run it on a machine with 32 GB or more."""
    result = _drive("sdxl-random", method, tmp_path, monkeypatch)
    assert result["unet_parameters_m"] == 2567.5 and result["mid_block_channels"] == 1280


def test_an_unknown_random_model_is_a_config_error() -> None:
    from benchmark.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown random model 'sd3-random'"):
        build_pipeline("sd3-random")
