"""Every method prepared and sampled on a half-precision base, as a GPU run loads it (float16, here on
the CPU), through `debias-bench perf --model`'s own code (benchmark.perf_real): a dtype fault (an
optimiser stepping fp16 weights, an fp16 tensor into a float32 layer) fails here without a GPU."""

from __future__ import annotations

import pytest
import torch

from benchmark.perf_real import METHOD_ORDER, measure_in_process, table
from benchmark.tiny import save_tiny_sd_pipeline, save_tiny_sdxl_pipeline


@pytest.mark.parametrize("save", [save_tiny_sd_pipeline, save_tiny_sdxl_pipeline], ids=["sd", "sdxl"])
def test_every_method_runs_on_a_float16_base(save, tmp_path, monkeypatch) -> None:
    import benchmark.real_models as real_models

    monkeypatch.setattr(real_models, "auto_device", lambda: (torch.device("cpu"), torch.float16))
    model = save(tmp_path / "model", seed=0, resolution=32)
    rows = measure_in_process(str(model), list(METHOD_ORDER), 32, 4, 2, 2, 1, tmp_path / "work")
    assert [r.get("error") for r in rows] == [None] * len(METHOD_ORDER), table(rows)
    by = {r["method"]: r for r in rows}
    assert {r["dtype"] for r in rows} == {"float16"} and {r["resolution"] for r in rows} == {32}
    # 4 steps with classifier-free guidance; InvDiff adds its guide UNet; DiffLens a second pass at edited steps
    assert [by[m]["unet_evals_per_image"] for m in METHOD_ORDER] == [8, 8, 16, 8, 10]
    assert by["baseline"]["bare_images_per_s"] > 0 and by["baseline"]["throughput_ratio"] > 0
    assert all(r["images_per_s"] > 0 and r["sample_peak_mb"] > 0 for r in rows)
