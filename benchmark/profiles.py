"""Profiles build the base model and the data around it; methods and metrics never see which.

* ``world``: the controlled-bias world shipped in ``benchmark/world`` (the default).
* ``real``: Stable Diffusion 1.x/2.x (a preset such as ``sd15``, a hub id in the local cache, or a
  local path; :mod:`benchmark.real_models`), with optional image folders for FID reference and
  method training data.
* ``tiny``: a randomly initialised tiny SD model built from configs, for smoke tests of the loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmark.components import Components
from benchmark.config import RunConfig
from benchmark.errors import ConfigError
from benchmark.images import ImageSet
from benchmark.registry import Registry
from methods.base import MethodData

INCEPTION_ENV = "DEBIAS_BENCH_INCEPTION_DIR"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class Profile:
    """A base model plus what the metrics and methods need around it."""

    name: str
    components: Components
    method_data: MethodData
    reference: ImageSet | None = None
    embedder: object | None = None
    features: Callable[[np.ndarray], np.ndarray] | None = None
    features_name: str = ""
    truth: dict | None = None
    info: dict = field(default_factory=dict)  # recorded in results.json as models.profile_info
    # read-only folders of prepared method artefacts (benchmark.shipped), searched before training
    artefact_stores: list[Path] = field(default_factory=list)


def world_profile(config: RunConfig) -> Profile:
    from benchmark.world import load_world, weights_dir

    if config.device is not None and torch.device(config.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config: device: {config.device!r} asked for, but CUDA is not available here")
    world = load_world(config.variant)
    if config.device is not None:
        # fp32 throughout, as on the CPU: cuDNN's TF32 convolutions would round far more coarsely
        torch.backends.cudnn.allow_tf32 = False
        world.components.to(config.device)
    return Profile(
        name=f"world:{config.variant}",
        components=world.components,
        method_data=world.method_data,
        reference=world.reference,
        embedder=world.embedder,
        features=world.features,
        features_name="world-clip",
        truth=world.truth,
        artefact_stores=[weights_dir(config.variant) / "methods"],
    )


def _tiny_images(seed: int, count: int, size: int, warm_share: float, caption: str) -> ImageSet:
    """Solid warm or cool squares with noise: a stand-in training set for the tiny profile."""
    rng = np.random.default_rng(seed)
    warm = rng.random(count) < warm_share
    base = np.where(warm[:, None], [200, 60, 40], [40, 60, 200]).astype(np.float32)
    noise = rng.normal(0, 20, (count, size, size, 3))
    images = np.clip(base[:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return ImageSet(images, [caption] * count, name=f"tiny-{seed}", labels={"tone": (~warm).astype(np.int64)})


def tiny_profile(config: RunConfig) -> Profile:
    from benchmark.tiny import tiny_sd_components

    components = tiny_sd_components(seed=config.seed)
    size = components.sampler.height
    return Profile(
        name="tiny",
        components=components,
        method_data=MethodData(
            target=_tiny_images(1, 64, size, 0.8, "a photo of a person"),
            nontarget=_tiny_images(2, 16, size, 0.5, "a photo of the face"),
        ),
    )


def read_image_folder(folder: str | Path, size: int | None = None, limit: int = 100_000) -> ImageSet:
    """All images in a folder (sorted by name) as uint8 RGB, resized to ``size`` if given."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:limit]
    if not files:
        raise ConfigError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    images = []
    for p in files:
        try:
            img = Image.open(p).convert("RGB")
        except OSError as exc:
            raise ConfigError(f"{p}: unreadable image ({exc})") from None
        if size is not None:
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        images.append(np.asarray(img))
    captions_file = folder / "captions.txt"
    captions = captions_file.read_text().splitlines() if captions_file.exists() else [""] * len(images)
    if len(captions) != len(images):
        raise ConfigError(f"{captions_file}: {len(captions)} captions for {len(images)} images")
    return ImageSet(np.stack(images), captions, name=folder.name)


def real_profile(config: RunConfig) -> Profile:
    """Stable Diffusion 1.x/2.x or SDXL from a preset, hub id (local cache) or folder; see benchmark.real_models.

    FID features: clean-fid's Inception when ``$DEBIAS_BENCH_INCEPTION_DIR`` names the folder holding
    its weights, else the CLIP model of ``clip_model``, else none.
    """
    if not config.model:
        raise ConfigError("config: model: the real profile needs `model` (a preset, a diffusers id or a local path)")
    from benchmark.real_models import load_sd

    components, info = load_sd(config.model)
    size = components.sampler.height
    data = MethodData(
        target=read_image_folder(config.target_dir, size) if config.target_dir else None,
        nontarget=read_image_folder(config.nontarget_dir, size) if config.nontarget_dir else None,
    )
    embedder = None
    if config.clip_model:
        from benchmark.embedding import OpenClipEmbedder

        embedder = OpenClipEmbedder(config.clip_model, pretrained=config.clip_pretrained)
        data.embedder = embedder
    reference = read_image_folder(config.reference_dir, size) if config.reference_dir else None
    features, features_name = None, ""
    if os.environ.get(INCEPTION_ENV):
        from benchmark.metrics.fid import InceptionFeatures

        features, features_name = InceptionFeatures(device=info["device"]), "clean-fid-inception"
    elif embedder is not None:
        features, features_name = embedder.encode_images, config.clip_model or ""
    info["fid_features"] = features_name or None
    return Profile("real", components, data, reference, embedder, features, features_name, info=info)


PROFILES: Registry[Callable[[RunConfig], Profile]] = Registry(
    "profile",
    {
        "world": "benchmark.profiles:world_profile",
        "real": "benchmark.profiles:real_profile",
        "tiny": "benchmark.profiles:tiny_profile",
    },
)


def load_profile(config: RunConfig) -> Profile:
    return PROFILES.get(config.profile)(config)
