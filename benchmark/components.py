"""The parts of a Stable-Diffusion-architecture text-to-image model, as one plain value.

Methods receive a :class:`Components` and never ask which profile (world or real) built it.
``vae is None`` marks a pixel-space model: latents are images scaled to [-1, 1].
``text_encoder_2 is not None`` marks an SDXL model (two text encoders and size conditioning);
:mod:`benchmark.sampling` turns either kind into one UNet condition, so methods need not ask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class SamplerConfig:
    """How images are sampled. Part of every image's cache key."""

    num_inference_steps: int = 20
    guidance_scale: float = 3.0
    height: int = 8
    width: int = 8
    negative_prompt: str = ""
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError("num_inference_steps must be >= 1")
        if self.height < 1 or self.width < 1:
            raise ValueError("height and width must be >= 1")


@dataclass
class Components:
    """UNet, text encoder, tokenizer, scheduler and (optional) VAE of one base model.

    SDXL adds ``text_encoder_2`` (a ``CLIPTextModelWithProjection``) and ``tokenizer_2``;
    ``force_zeros_for_empty_prompt`` is its pipeline config's flag (zeros, not the encoded empty
    prompt, for the unconditional branch); ``upcast_vae`` keeps the VAE in float32 when the rest is
    float16 (``vae.config.force_upcast``: SDXL's VAE overflows in float16).
    """

    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    vae: Any | None = None
    name: str = "model"
    fingerprint: str = ""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    text_encoder_2: Any | None = None
    tokenizer_2: Any | None = None
    force_zeros_for_empty_prompt: bool = False
    upcast_vae: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def latent_scale(self) -> int:
        """Pixels per latent cell along one side (1 in pixel space)."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def replace(self, **changes: Any) -> Components:
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Components:
        for module in (self.unet, self.text_encoder, self.text_encoder_2, self.vae):
            if module is not None:
                kind = torch.float32 if module is self.vae and self.upcast_vae and dtype is not None else dtype
                module.to(device=device, dtype=kind) if kind is not None else module.to(device)
        return self


MODEL_FIELDS = ("unet", "text_encoder", "tokenizer", "scheduler")


class _Models:
    """The models behind a :class:`LazyComponents`, loaded once on first use (shared by its replacements)."""

    def __init__(self, load: Callable[[], tuple[Any, Any, Any, Any]]) -> None:
        self._load = load
        self.parts: dict[str, Any] | None = None
        self.moves: list[tuple[Any, Any]] = []  # .to() calls made before loading, applied after
        self.loads = 0

    def get(self, name: str) -> Any:
        if self.parts is None:
            self.parts = dict(zip(MODEL_FIELDS, self._load(), strict=True))
            self.loads += 1
            for device, dtype in self.moves:
                for key in ("unet", "text_encoder"):
                    module = self.parts[key]
                    module.to(device=device, dtype=dtype) if dtype is not None else module.to(device)
        return self.parts[name]


class LazyComponents(Components):
    """:class:`Components` whose UNet, text encoder, tokenizer and scheduler are loaded on first use.

    Name, fingerprint and sampler are known without them, so a run whose images are all cached never
    imports diffusers or reads the weights (the world profile's base model; a missing or corrupt file
    is still found before, by the manifest's hashes). ``replace`` keeps the models unloaded unless it
    replaces one of them; anything that reads a model loads all four (``loaded`` says whether they are).
    A pixel-space model only (no VAE, no second text encoder)."""

    def __init__(self, load: Callable[[], tuple[Any, Any, Any, Any]] | _Models, **fields: Any) -> None:
        object.__setattr__(self, "_models", load if isinstance(load, _Models) else _Models(load))
        super().__init__(**dict.fromkeys(MODEL_FIELDS), **fields)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in MODEL_FIELDS and value is None and self.__dict__.get("_models") is not None \
                and self._models.parts is None:
            return  # the dataclass __init__'s placeholders: left to __getattr__
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name in MODEL_FIELDS:
            return self.__dict__["_models"].get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def loaded(self) -> bool:
        return self._models.parts is not None

    def replace(self, **changes: Any) -> Components:
        if self.loaded or set(changes) & set(MODEL_FIELDS):
            values = {f.name: getattr(self, f.name) for f in dataclasses.fields(Components)}
            return Components(**{**values, **changes})
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(Components) if f.name not in MODEL_FIELDS}
        return LazyComponents(self._models, **{**values, **changes})

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Components:
        if self.loaded:
            return super().to(device, dtype)
        self._models.moves.append((device, dtype))
        return self


def auto_device() -> tuple[torch.device, torch.dtype]:
    """CUDA with fp16 when available, else CPU with float32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32
