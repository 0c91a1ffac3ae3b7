"""Prepare and sample one method on a full-shape random model (benchmark.full_shape), in its own
process so that its peak memory is its own. Prints one JSON line: seconds and peak resident memory
of each stage. Usage: full_shape_driver.py KIND METHOD RESOLUTION STEPS WORKDIR."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doubles import MeanColourClassifier, PixelEmbedder  # noqa: E402

from benchmark.images import ImageSet  # noqa: E402
from benchmark.perf_real import PERF_BUDGETS as BUDGET  # noqa: E402
from benchmark.real_models import load_sd  # noqa: E402
from benchmark.sampling import sample  # noqa: E402
from methods import METHODS  # noqa: E402
from methods.base import MethodData  # noqa: E402

PROMPTS = ["a photo of a doctor", "a photo of a nurse"]


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main(kind: str, name: str, resolution: int, steps: int, workdir: str) -> dict:
    torch.set_num_threads(2)
    out: dict = {"kind": kind, "method": name, "resolution": resolution, "steps": steps}
    t = time.perf_counter()
    base, info = load_sd(kind)
    base = base.replace(sampler=type(base.sampler)(num_inference_steps=steps, guidance_scale=7.5, height=resolution,
                                                   width=resolution))
    if name == "difflens":  # its two-pass step is DDIM's (the paper's sampler); SD 1.5 ships PNDM
        from benchmark.runner import scheduler_from

        base = base.replace(scheduler=scheduler_from("ddim", base.scheduler))
    out["load_s"], out["load_peak_mb"] = round(time.perf_counter() - t, 1), peak_mb()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, resolution, resolution, 3), dtype=np.uint8)
    data = MethodData(target=ImageSet(images, [PROMPTS[i % 2] for i in range(4)], "target",
                                      labels={"tone": np.array([0, 1, 0, 1])}),
                      nontarget=ImageSet(images[::-1].copy(), ["a photo"] * 4, "nontarget"),
                      prompts=PROMPTS, classifier=MeanColourClassifier(), embedder=PixelEmbedder(), attribute="tone")
    method = METHODS.get(name).from_config(BUDGET[name])
    t = time.perf_counter()
    method.prepare(base, data, Path(workdir))
    out["prepare_s"], out["prepare_peak_mb"] = round(time.perf_counter() - t, 1), peak_mb()
    t = time.perf_counter()
    got = method.generate([PROMPTS[0]], [1])
    out["sample_s"], out["peak_mb"] = round(time.perf_counter() - t, 1), peak_mb()
    assert got.shape == (1, resolution, resolution, 3) and got.dtype == np.uint8, got.shape
    if name == "baseline":
        assert np.array_equal(got, sample(base, [PROMPTS[0]], [1]))
    out["unet_parameters_m"] = round(sum(p.numel() for p in base.unet.parameters()) / 1e6, 1)
    out["mid_block_channels"] = int(base.unet.config.block_out_channels[-1])
    return out


if __name__ == "__main__":
    kind, name, resolution, steps, workdir = sys.argv[1:6]
    print(json.dumps(main(kind, name, int(resolution), int(steps), workdir)))
