"""The text-to-image sampling loop shared by every method and profile.

It is the loop of diffusers' ``StableDiffusionPipeline`` (text encoding, classifier-free
guidance with the batch ordered ``[uncond; cond]``, scheduler steps, VAE decoding), split
into small functions so methods can reuse the parts, plus two things the benchmark needs:

* per-image initial noise drawn from a generator seeded by that image's own seed, so an
  image does not depend on the batch it was generated in;
* a mid-block callback that knows the current step, through :mod:`benchmark.hooks`;
* a step callback (:class:`StepContext`) that may replace the scheduler's update at any step, with
  extra UNet evaluations of its own (DiffLens's two-pass DDIM step).

What the UNet is conditioned on is one value, :class:`TextCondition`, so the same loop serves
SDXL (``StableDiffusionXLPipeline``): there the text encoding concatenates two encoders' penultimate
hidden states, and the UNet also gets the pooled text embedding and the size/crop "time ids"
(``added_cond_kwargs``; SDXL paper, Podell et al. 2023, §2.2). Methods build conditions with
:func:`encode_condition` / :func:`encode_uncond` and call the UNet through :func:`unet_eps` or
:func:`guided_noise`, and never ask which model family they run on.

``tests/test_sampling.py`` checks that it gives the same images as ``StableDiffusionPipeline``, and
``tests/test_sdxl.py`` the same against ``StableDiffusionXLPipeline``.
"""

from __future__ import annotations

import contextlib
import functools
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


@dataclass(frozen=True, eq=False)
class StepContext:
    """What a step callback sees: the step, its latents, the guided noise already computed for
    them, the private scheduler, and :meth:`noise` for another guided UNet evaluation at this step
    (mid-block callbacks run in it as in the first)."""

    info: StepInfo
    t: torch.Tensor
    latents: torch.Tensor
    eps: torch.Tensor
    scheduler: object
    _noise: Callable[[], torch.Tensor]

    def noise(self) -> torch.Tensor:
        return self._noise()


StepFn = Callable[[StepContext], "torch.Tensor | None"]


def uses_cfg(config: SamplerConfig) -> bool:
    return config.guidance_scale > 1.0


@dataclass(frozen=True, eq=False)  # (tensor fields: no element-wise __eq__)
class TextCondition:
    """What the UNet is conditioned on, for a batch of texts.

    hidden: ``encoder_hidden_states`` (N, L, D).
    added:  extra UNet inputs (``added_cond_kwargs``), each (N, ...), or None. SDXL: ``text_embeds``
            (the second encoder's pooled, projected embedding) and ``time_ids`` (original size, crop
            top-left, target size: ``StableDiffusionXLPipeline._get_add_time_ids``).
    """

    hidden: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> TextCondition:
        added = None if self.added is None else {k: fn(v) for k, v in self.added.items()}
        return TextCondition(fn(self.hidden), added)

    def __getitem__(self, index) -> TextCondition:
        """The rows ``index`` selects along the batch (a slice, an index tensor or a boolean mask)."""
        return self._map(lambda v: v[index])

    @staticmethod
    def cat(parts: Sequence[TextCondition]) -> TextCondition:
        """Concatenate along the batch, e.g. ``cat([uncond, cond])`` for a CFG batch."""
        first = parts[0]
        added = None if first.added is None else {k: torch.cat([p.added[k] for p in parts]) for k in first.added}
        return TextCondition(torch.cat([p.hidden for p in parts]), added)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextCondition:
        return self._map(lambda v: v.to(device=device, dtype=dtype))

    def where(self, mask: torch.Tensor, other: TextCondition) -> TextCondition:
        """Row i from ``other`` where ``mask[i]`` (a batch of one is broadcast), else from ``self``."""

        def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.where(mask.view(-1, *[1] * (a.dim() - 1)), b.expand_as(a), a)

        added = None if self.added is None else {k: pick(v, other.added[k]) for k, v in self.added.items()}
        return TextCondition(pick(self.hidden, other.hidden), added)

    def zero_text(self) -> TextCondition:
        """Text parts zeroed (hidden states, pooled embedding); size conditioning kept. SDXL's
        unconditional branch for an empty negative prompt (``force_zeros_for_empty_prompt``)."""
        added = None if self.added is None else {
            k: (v if k == "time_ids" else torch.zeros_like(v)) for k, v in self.added.items()}
        return TextCondition(torch.zeros_like(self.hidden), added)

    def unet_kwargs(self) -> dict:
        """Keyword arguments of ``UNet2DConditionModel.forward`` (a fresh dict every call)."""
        kwargs: dict = {"encoder_hidden_states": self.hidden}
        if self.added is not None:
            kwargs["added_cond_kwargs"] = dict(self.added)
        return kwargs


def as_condition(text: TextCondition | torch.Tensor) -> TextCondition:
    """Plain hidden states (SD 1.x/2.x callers) as a condition."""
    return text if isinstance(text, TextCondition) else TextCondition(text)


def _token_ids(tokenizer, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    tok = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    return tok.input_ids.to(device)


def encode_condition(components: Components, texts: Sequence[str], size: tuple[int, int] | None = None,
                     *, grad: bool = False) -> TextCondition:
    """The UNet condition for ``texts``, on the UNet's device and dtype.

    One text encoder (SD 1.x/2.x): its last hidden states (``StableDiffusionPipeline.encode_prompt``).
    Two (SDXL, ``StableDiffusionXLPipeline.encode_prompt``): both encoders' penultimate hidden states
    (``hidden_states[-2]``) concatenated along the features, the second encoder's ``text_embeds`` as the
    pooled embedding, and time ids ``(h, w, 0, 0, h, w)`` for ``size`` = (h, w) in pixels (default:
    the components' sampler size): the pipeline's defaults, original = target size, no crop.
    ``grad=True`` follows the caller's grad mode (training a text-encoder LoRA); else no graph.
    """
    with contextlib.nullcontext() if grad else torch.no_grad():
        if components.text_encoder_2 is None:
            encoder = components.text_encoder
            hidden = encoder(_token_ids(components.tokenizer, texts, encoder.device))[0]
            return TextCondition(hidden.to(device=components.device, dtype=components.dtype))
        hiddens, pooled = [], None
        for tokenizer, encoder in ((components.tokenizer, components.text_encoder),
                                   (components.tokenizer_2, components.text_encoder_2)):
            out = encoder(_token_ids(tokenizer, texts, encoder.device), output_hidden_states=True)
            hiddens.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's projected pooled embedding (text_embeds)
        device, dtype = components.device, components.dtype
        h, w = size or (components.sampler.height, components.sampler.width)
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=dtype, device=device).repeat(len(texts), 1)
        return TextCondition(torch.cat(hiddens, dim=-1).to(device=device, dtype=dtype),
                             {"text_embeds": pooled.to(device=device, dtype=dtype), "time_ids": time_ids})


def encode_uncond(components: Components, count: int, config: SamplerConfig | None = None) -> TextCondition:
    """The unconditional CFG branch for ``count`` images: ``config.negative_prompt`` encoded, except
    that a model whose pipeline config sets ``force_zeros_for_empty_prompt`` (SDXL base) uses zeros for
    an empty negative prompt, as ``StableDiffusionXLPipeline`` does when no negative prompt is given."""
    config = config or components.sampler
    cond = encode_condition(components, [config.negative_prompt] * count, (config.height, config.width))
    if components.force_zeros_for_empty_prompt and not config.negative_prompt:
        return cond.zero_text()
    return cond


@torch.no_grad()
def encode_text(components: Components, texts: Sequence[str]) -> torch.Tensor:
    """Only the hidden states (N, L, D) of :func:`encode_condition`; UNet calls need the whole condition."""
    return encode_condition(components, texts).hidden


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


def unet_eps(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor,
             cond: TextCondition | torch.Tensor) -> torch.Tensor:
    """The UNet's output (noise, or v) for input ``x`` at ``t`` under ``cond``."""
    return unet(x, t, **as_condition(cond).unet_kwargs()).sample


def guided_noise(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    t: torch.Tensor,
    text: TextCondition | torch.Tensor,
    uncond: TextCondition | torch.Tensor | None,
    guidance_scale: float,
    scheduler,
) -> torch.Tensor:
    """One UNet call with classifier-free guidance (batch ``[uncond; cond]``)."""
    if uncond is None:
        model_in = scheduler.scale_model_input(latents, t)
        return unet_eps(unet, model_in, t, text)
    model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
    eps = unet_eps(unet, model_in, t, TextCondition.cat([as_condition(uncond), as_condition(text)]))
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
    step_fn: StepFn | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Generate one image per (prompt, seed) pair; returns uint8 (N, H, W, 3).

    ``mid_block_fn(h, info)`` may replace the mid-block output; ``step_fn(context)`` may return the
    next latents in place of the scheduler's step (None keeps the scheduler's)."""
    config = config or components.sampler
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    cfg = uses_cfg(config)
    scheduler = fresh_scheduler(components, config)
    text = encode_condition(components, prompts, (config.height, config.width))
    uncond = encode_uncond(components, len(prompts), config) if cfg else None
    latents = initial_latents(components, seeds, config) * scheduler.init_noise_sigma
    extra = step_kwargs(scheduler, config)

    info = StepInfo(0, 0, len(scheduler.timesteps), cfg)

    def hook(h: torch.Tensor) -> torch.Tensor | None:
        return mid_block_fn(h, info) if mid_block_fn is not None else None

    # read once: int() of a GPU timestep at every step would make the host wait for the GPU each time
    step_numbers = [int(t) for t in scheduler.timesteps.tolist()]
    with torch.no_grad(), mid_block_hook(components.unet, hook):
        for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc="denoise", leave=False)):
            info = StepInfo(i, step_numbers[i], len(scheduler.timesteps), cfg)
            noise = functools.partial(guided_noise, components.unet, latents, t, text, uncond,
                                      config.guidance_scale, scheduler)
            eps = noise()
            replaced = None if step_fn is None else step_fn(StepContext(info, t, latents, eps, scheduler, noise))
            latents = replaced if replaced is not None else scheduler.step(eps, t, latents, **extra).prev_sample
    return to_uint8(decode(components, latents))
