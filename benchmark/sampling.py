"""The text-to-image sampling loop shared by every method and profile.

It is the loop of diffusers' ``StableDiffusionPipeline`` (text encoding, classifier-free
guidance with the batch ordered ``[uncond; cond]``, scheduler steps, VAE decoding), split
into small functions so methods can reuse the parts, plus two things the benchmark needs:

* per-image initial noise drawn from a generator seeded by that image's own seed, so an
  image does not depend on the batch it was generated in;
* a mid-block callback that knows the current step, through :mod:`benchmark.hooks`.

``tests/test_sampling.py`` checks that it gives the same images as ``StableDiffusionPipeline``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.components import Components, SamplerConfig
from benchmark.errors import DataError
from benchmark.hooks import mid_block_hook


@dataclass(frozen=True)
class StepInfo:
    """Where the sampler is: ``index`` 0 is the first (noisiest) step."""

    index: int
    timestep: int
    num_steps: int
    cfg: bool


MidBlockStepFn = Callable[[torch.Tensor, StepInfo], "torch.Tensor | None"]


def uses_cfg(config: SamplerConfig) -> bool:
    return config.guidance_scale > 1.0


@torch.no_grad()
def encode_text(components: Components, texts: Sequence[str]) -> torch.Tensor:
    """Text-encoder hidden states (N, L, D) for ``texts``, on the UNet's device and dtype."""
    tok = components.tokenizer(
        list(texts),
        padding="max_length",
        max_length=components.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    ids = tok.input_ids.to(components.text_encoder.device)
    hidden = components.text_encoder(ids)[0]
    return hidden.to(device=components.device, dtype=components.dtype)


def initial_latents(components: Components, seeds: Sequence[int], config: SamplerConfig) -> torch.Tensor:
    """Gaussian noise, one CPU generator per image seed, stacked on the model's device."""
    scale = components.latent_scale
    shape = (components.latent_channels, config.height // scale, config.width // scale)
    noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
    return torch.stack(noise).to(device=components.device, dtype=components.dtype)


def fresh_scheduler(components: Components, config: SamplerConfig):
    """A private copy of the scheduler with its timesteps set (schedulers keep state)."""
    scheduler = components.scheduler.__class__.from_config(components.scheduler.config)
    scheduler.set_timesteps(config.num_inference_steps, device=components.device)
    return scheduler


def step_kwargs(scheduler, config: SamplerConfig) -> dict:
    return {"eta": config.eta} if "eta" in inspect.signature(scheduler.step).parameters else {}


def guided_noise(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance_scale: float,
    scheduler,
) -> torch.Tensor:
    """One UNet call with classifier-free guidance (batch ``[uncond; cond]``)."""
    if uncond is None:
        model_in = scheduler.scale_model_input(latents, t)
        return unet(model_in, t, encoder_hidden_states=text).sample
    model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
    eps = unet(model_in, t, encoder_hidden_states=torch.cat([uncond, text])).sample
    eps_uncond, eps_text = eps.chunk(2)
    return eps_uncond + guidance_scale * (eps_text - eps_uncond)


@torch.no_grad()
def decode(components: Components, latents: torch.Tensor) -> torch.Tensor:
    """Latents to float images in [0, 1], shape (N, H, W, 3), on the CPU."""
    if components.vae is None:
        images = latents
    else:
        vae = components.vae
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return (images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1] to uint8; refuses NaN/Inf so they are never scored."""
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise DataError(f"{bad} of {len(images)} generated images contain NaN or Inf values")
    return (images * 255).round().to(torch.uint8).numpy()


def sample(
    components: Components,
    prompts: Sequence[str],
    seeds: Sequence[int],
    config: SamplerConfig | None = None,
    *,
    mid_block_fn: MidBlockStepFn | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Generate one image per (prompt, seed) pair; returns uint8 (N, H, W, 3)."""
    config = config or components.sampler
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    cfg = uses_cfg(config)
    scheduler = fresh_scheduler(components, config)
    text = encode_text(components, prompts)
    uncond = encode_text(components, [config.negative_prompt] * len(prompts)) if cfg else None
    latents = initial_latents(components, seeds, config) * scheduler.init_noise_sigma
    extra = step_kwargs(scheduler, config)

    info = StepInfo(0, 0, len(scheduler.timesteps), cfg)

    def hook(h: torch.Tensor) -> torch.Tensor | None:
        return mid_block_fn(h, info) if mid_block_fn is not None else None

    with torch.no_grad(), mid_block_hook(components.unet, hook):
        for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc="denoise", leave=False)):
            info = StepInfo(i, int(t), len(scheduler.timesteps), cfg)
            eps = guided_noise(components.unet, latents, t, text, uncond, config.guidance_scale, scheduler)
            latents = scheduler.step(eps, t, latents, **extra).prev_sample
    return to_uint8(decode(components, latents))
