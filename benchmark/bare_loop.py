"""The reference every throughput ratio is taken against: what a user writes by hand with diffusers."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from benchmark.components import Components

_LOW_PRECISION_VAE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # VAE -> its half-precision copy


def bare_loop(components: Components, prompts: list[str], seeds: list[int]) -> np.ndarray:
    """What a user writes by hand: diffusers' pipeline, or its loop for a pixel-space model."""
    import numpy as np
    import torch

    from benchmark.sampling import encode_condition, initial_latents, unet_eps

    cfg = components.sampler
    latents = initial_latents(components, seeds, cfg)
    if components.vae is not None:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        vae = components.vae
        if vae.dtype != components.dtype:  # SDXL keeps its VAE in float32; the pipeline upcasts an fp16 one itself
            import copy

            if vae not in _LOW_PRECISION_VAE:  # made once, outside the timed calls after the first
                _LOW_PRECISION_VAE[vae] = copy.deepcopy(vae).to(components.dtype)
            vae = _LOW_PRECISION_VAE[vae]
        parts = dict(vae=vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
                     unet=components.unet, scheduler=components.scheduler)
        if components.text_encoder_2 is not None:
            pipe = StableDiffusionXLPipeline(**parts, text_encoder_2=components.text_encoder_2,
                                             tokenizer_2=components.tokenizer_2, add_watermarker=False,
                                             force_zeros_for_empty_prompt=components.force_zeros_for_empty_prompt)
        else:
            pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(prompts, height=cfg.height, width=cfg.width, num_inference_steps=cfg.num_inference_steps,
                   guidance_scale=cfg.guidance_scale, latents=latents, output_type="np").images
        return (out * 255).round().astype(np.uint8)
    with torch.no_grad():
        emb = encode_condition(components, prompts + [""] * len(prompts))
        scheduler = components.scheduler
        scheduler.set_timesteps(cfg.num_inference_steps)
        for t in scheduler.timesteps:
            eps = unet_eps(components.unet, torch.cat([latents, latents]), t, emb)
            cond, uncond = eps.chunk(2)
            latents = scheduler.step(uncond + cfg.guidance_scale * (cond - uncond), t, latents).prev_sample
    return ((latents / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
