"""The controlled-bias world: the embedded default profile of the benchmark.

>>> from benchmark.world import load_world
>>> world = load_world()                       # shipped weights, verified against manifest.json
>>> images = sample(world.components, ["a photo of a seven"] * 4, [0, 1, 2, 3])

The world renders 8x8 handwritten digits (content, named by the prompt) with a stroke colour
(``color``: red/blue) and a background shade (``shade``: light/mid/dark) that the plain prompt
does not name; ``config.yaml`` gives each digit's training share of every attribute class, which
is the known true bias of its prompt (``World.truth``). Every model is a real library class at toy
size (diffusers UNet2DConditionModel + DDIM, transformers CLIPTextModel, open_clip), rebuilt from
scratch by ``debias-bench world build`` (``benchmark/world/build.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.components import Components, LazyComponents, SamplerConfig
from benchmark.errors import ModelLoadError
from benchmark.hashing import hash_file, hash_value
from benchmark.images import ImageSet
from benchmark.world.config import WORLD_DIR, WorldConfig, load_world_config
from benchmark.world.prompts import WorldPrompt, world_prompts, world_truth

__all__ = ["World", "WorldPrompt", "load_world", "weights_dir", "world_prompts", "world_truth"]

MANIFEST = "manifest.json"


def weights_dir(variant: str = "default") -> Path:
    """Where a variant's weights live: ``weights/`` for the default world, ``weights-<variant>/`` else."""
    return WORLD_DIR / ("weights" if variant == "default" else f"weights-{variant}")


@dataclass
class World:
    """Everything a run needs from the world.

    components:   the base generator (UNet, text encoder, tokenizer, DDIM scheduler, no VAE),
                  with ``fingerprint`` = sha256 over its weight files and ``sampler`` = the default
                  SamplerConfig chosen by measurement (see the manifest's ``quality``).
    method_data:  target = the biased training set (captions = plain prompts; ``labels`` hold the
                  true content/color/shade, for oracle use only), nontarget = green squares and rings,
                  prompts = the world prompt texts, embedder = the world CLIP.
    reference:    balanced renders (FID reference), with labels.
    heldout:      balanced labelled renders of held-out glyph scans (classifier accuracy).
    embedder:     the world CLIP (:class:`benchmark.embedding.OpenClipEmbedder`).
    features:     callable, uint8 (N, H, W, 3) → (N, 64) FID features (world CLIP image tower).
    reference_stats: (mu, sigma) of ``features(reference)``, as shipped.
    prompts:      the world prompts (id, text, named attributes).
    truth:        {prompt id: {attribute: configured class shares (np.ndarray)}}.
    manifest:     the parsed ``manifest.json`` (hashes, configs, training times, measured quality).
    """

    variant: str
    config: WorldConfig
    components: Components
    method_data: object
    reference: ImageSet
    heldout: ImageSet
    embedder: object
    features: Callable[[np.ndarray], np.ndarray]
    reference_stats: tuple[np.ndarray, np.ndarray]
    prompts: list[WorldPrompt]
    truth: dict[str, dict[str, np.ndarray]]
    manifest: dict = field(default_factory=dict)

    @property
    def attributes(self) -> dict[str, list[str]]:
        return self.config.attributes


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.exists():
        raise ModelLoadError(f"{path}: world weights not built; run `debias-bench world build`"
                             + ("" if directory.name == "weights" else f" --config {directory.name[8:]}"))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: corrupt manifest ({exc})") from None


def verify_weights(directory: Path, manifest: dict) -> None:
    """Every file listed in the manifest exists and has its recorded sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelLoadError(f"{directory / MANIFEST}: lists no files")
    for rel, meta in files.items():
        path = directory / rel
        if not path.is_file():
            raise ModelLoadError(f"{path}: missing world weights file; run `debias-bench world build`")
        if hash_file(path) != meta["sha256"]:
            raise ModelLoadError(f"{path}: sha256 does not match {MANIFEST} (corrupt or modified file); "
                                 "restore it or run `debias-bench world build`")


def load_generator(directory: Path) -> tuple:
    """UNet, text encoder, tokenizer and scheduler from ``directory/generator``."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, PreTrainedTokenizerFast

    gen = directory / "generator"
    parts = {}
    for name, loader in (("unet", UNet2DConditionModel), ("text_encoder", CLIPTextModel),
                         ("tokenizer", PreTrainedTokenizerFast), ("scheduler", DDIMScheduler)):
        try:
            parts[name] = loader.from_pretrained(str(gen / name))
        except Exception as exc:  # each library raises its own error types for bad files
            raise ModelLoadError(f"{gen / name}: cannot load the world generator's {name} ({str(exc).splitlines()[0]})") from None
    parts["unet"].eval().requires_grad_(False)
    parts["text_encoder"].eval().requires_grad_(False)
    return parts["unet"], parts["text_encoder"], parts["tokenizer"], parts["scheduler"]


def load_components(variant: str = "default", directory: Path | None = None, verify: bool = True) -> Components:
    """Only the base generator (faster than :func:`load_world` when nothing else is needed)."""
    directory = Path(directory) if directory is not None else weights_dir(variant)
    manifest = read_manifest(directory)
    if verify:
        verify_weights(directory, manifest)
    return _components(directory, manifest, variant)


def _components(directory: Path, manifest: dict, variant: str, lazy: bool = False) -> Components:
    """The generator as :class:`Components`; ``lazy``: loaded (diffusers imported) only when a model is
    first used, which a run whose images are all cached never does. The fingerprint is the manifest's
    hashes either way."""
    gen_hashes = {k: v["sha256"] for k, v in manifest["files"].items() if k.startswith("generator/")}
    info = {"vae": None, "name": f"world-{variant}", "fingerprint": hash_value(gen_hashes),
            "sampler": SamplerConfig(**manifest["sampler"])}
    if lazy:
        return LazyComponents(lambda: load_generator(directory), **info)
    unet, text_encoder, tokenizer, scheduler = load_generator(directory)
    return Components(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, **info)


def load_world(variant: str = "default", directory: str | Path | None = None, verify: bool = True) -> World:
    """Load a world variant (``default`` or ``alt``) from its shipped weights.

    Every weights file is checked against the sha256 in ``manifest.json``; a missing, modified or
    corrupt file raises :class:`~benchmark.errors.ModelLoadError` naming it. The generator's models
    load on first use (:class:`~benchmark.components.LazyComponents`).
    """
    from benchmark.world.data import heldout_set, nontarget_set, reference_set, training_set
    from benchmark.world.features import WorldFeatures, load_reference_stats, world_embedder
    from methods.base import MethodData

    config = load_world_config(variant)
    directory = Path(directory) if directory is not None else weights_dir(variant)
    manifest = read_manifest(directory)
    if verify:
        verify_weights(directory, manifest)
    if manifest.get("config_fingerprint") not in (None, config.fingerprint()):
        raise ModelLoadError(f"{directory / MANIFEST}: built from a different world config than {config.path}; "
                             "run `debias-bench world build`")
    components = _components(directory, manifest, variant, lazy=True)
    embedder = world_embedder(directory, lazy=True)
    features = WorldFeatures(embedder)
    prompts = world_prompts(config)
    method_data = MethodData(
        target=training_set(config, lazy=True),
        nontarget=nontarget_set(config, lazy=True),
        prompts=[p.text for p in prompts],
        embedder=embedder,
    )
    return World(
        variant=variant,
        config=config,
        components=components,
        method_data=method_data,
        reference=reference_set(config, lazy=True),
        heldout=heldout_set(config, lazy=True),
        embedder=embedder,
        features=features,
        reference_stats=load_reference_stats(directory),
        prompts=prompts,
        truth=world_truth(config),
        manifest=manifest,
    )
