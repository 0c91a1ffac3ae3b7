"""The shared sampling loop equals diffusers' StableDiffusionPipeline and is batch-independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from benchmark.errors import DataError
from benchmark.hooks import record_mid_block, split_branches
from benchmark.sampling import initial_latents, sample, to_uint8
from benchmark.tiny import tiny_sd_components


@pytest.fixture(scope="module")
def tiny():
    return tiny_sd_components(seed=0)


def test_matches_stable_diffusion_pipeline(tiny) -> None:
    prompts, seeds = ["a photo of a doctor", "a photo of a nurse"], [11, 12]
    ours = sample(tiny, prompts, seeds)
    pipe = StableDiffusionPipeline(vae=tiny.vae, text_encoder=tiny.text_encoder, tokenizer=tiny.tokenizer,
                                   unet=tiny.unet, scheduler=tiny.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    cfg = tiny.sampler
    out = pipe(prompts, height=cfg.height, width=cfg.width, num_inference_steps=cfg.num_inference_steps,
               guidance_scale=cfg.guidance_scale, latents=initial_latents(tiny, seeds, cfg), output_type="np").images
    np.testing.assert_array_equal(ours, (out * 255).round().astype(np.uint8))


def test_image_depends_only_on_its_seed(tiny) -> None:
    batch = sample(tiny, ["a photo of a doctor"] * 3, [5, 6, 7])
    alone = sample(tiny, ["a photo of a doctor"], [6])
    np.testing.assert_array_equal(batch[1], alone[0])
    assert not np.array_equal(batch[0], batch[1])


def test_pixel_space_model_samples_images() -> None:
    pixel = tiny_sd_components(with_vae=False, resolution=8)
    images = sample(pixel, ["a photo of a nurse"] * 2, [1, 2])
    assert images.shape == (2, 8, 8, 3) and images.dtype == np.uint8


def test_mid_block_records_both_cfg_branches(tiny) -> None:
    with record_mid_block(tiny.unet) as seen:
        sample(tiny, ["a photo of a doctor"] * 2, [1, 2])
    assert len(seen) == tiny.sampler.num_inference_steps
    uncond, cond = split_branches(seen[0], cfg=True)
    assert uncond.shape[0] == cond.shape[0] == 2


def test_mid_block_fn_sees_steps_in_order_and_can_edit(tiny) -> None:
    steps = []

    def zero_h(h: torch.Tensor, info) -> torch.Tensor:
        steps.append(info.index)
        return torch.zeros_like(h)

    edited = sample(tiny, ["a photo of a doctor"], [3], mid_block_fn=zero_h)
    assert steps == list(range(tiny.sampler.num_inference_steps))
    assert not np.array_equal(edited, sample(tiny, ["a photo of a doctor"], [3]))


def test_nan_images_are_refused() -> None:
    images = torch.zeros(2, 4, 4, 3)
    images[1, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="1 of 2 generated images contain NaN"):
        to_uint8(images)


def test_step_fn_sees_every_step_and_can_replace_the_update(tiny) -> None:
    prompts, seeds = ["a photo of a doctor"] * 2, [4, 5]
    plain = sample(tiny, prompts, seeds)
    seen, evals = [], []

    def scheduler_step(ctx) -> torch.Tensor:
        seen.append(ctx.info.index)
        again = ctx.noise()  # a second guided evaluation at the same step gives the same noise
        evals.append(bool(torch.equal(again, ctx.eps)))
        return ctx.scheduler.step(ctx.eps, ctx.t, ctx.latents).prev_sample

    np.testing.assert_array_equal(sample(tiny, prompts, seeds, step_fn=scheduler_step), plain)
    assert seen == list(range(tiny.sampler.num_inference_steps)) and all(evals)
    np.testing.assert_array_equal(sample(tiny, prompts, seeds, step_fn=lambda ctx: None), plain)
    frozen = sample(tiny, prompts, seeds, step_fn=lambda ctx: ctx.latents)  # the update replaced: no denoising
    assert not np.array_equal(frozen, plain)


def test_the_loop_reads_timesteps_from_the_device_once(tiny, monkeypatch) -> None:
    """On a GPU each host read of a device tensor waits for the queued work; one per step cost SDXL 20 %
    of its throughput on an H200. The loop itself may read the timesteps once, not once per step."""
    import sys

    import benchmark.sampling as sampling

    reads = []
    for name in ("__int__", "__float__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name):
            if sys._getframe(1).f_code.co_filename == sampling.__file__:
                reads.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counting)
    sample(tiny, ["a photo of a doctor"], [3])
    assert tiny.sampler.num_inference_steps > 2 and len(reads) <= 2, reads
