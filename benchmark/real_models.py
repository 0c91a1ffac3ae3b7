"""Stable Diffusion models for the ``real`` profile: presets, offline loading, speed flags.

``model`` in a run config is a preset name (``sd14``, ``sd15``, ``sd21``, ``sd21-base``, ``sdxl``), a
diffusers hub id (found in the local Hugging Face cache, never downloaded) or a local pipeline folder
(what ``save_pretrained`` of ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` writes). A
preset, or a hub id that matches one, fixes the native resolution and the sampler defaults (steps,
guidance; a folder or id without a preset gets its pipeline's defaults); run-config ``sampler``
fields still override them. The scheduler is the one the model ships with; its class and prediction type are
read from the loaded model and recorded, with everything else here, in ``results.json``
(``models.profile_info``).

Speed, on CUDA: fp16 weights, PyTorch SDPA attention (``AttnProcessor2_0``), and two opt-in flags,
``compile`` (``torch.compile`` of the UNet; ``$DEBIAS_BENCH_COMPILE=1``) and ``vae_slicing`` (decode
one image at a time, less memory; ``$DEBIAS_BENCH_VAE_SLICING=1``). On CPU the weights stay fp32.

SDXL (a folder or cached repo whose ``model_index.json`` names ``StableDiffusionXLPipeline`` or a
``text_encoder_2``; :func:`is_sdxl`) loads with ``StableDiffusionXLPipeline``: both text encoders and
tokenizers, ``force_zeros_for_empty_prompt`` from its config, no invisible watermark (it would alter
the scored pixels). The sampling loop conditions the UNet as that pipeline does (see
:mod:`benchmark.sampling`). In float16 the VAE stays in float32 when ``vae.config.force_upcast`` is
set, which is what the pipeline does before decoding (SDXL's VAE overflows in float16).

Sources for the presets: the models' cards and ``scheduler_config.json`` files (SD 1.x and 2.1-base:
PNDM, ε-prediction, 512 px; SD 2.1: DDIM, v-prediction, 768 px; SDXL base 1.0: EulerDiscrete,
ε-prediction, 1024 px), and the pipelines' ``__call__`` defaults (``StableDiffusionPipeline``: 50
steps, guidance 7.5; ``StableDiffusionXLPipeline``: 50 steps, guidance 5.0). Per-method paper
settings are each method's ``paper_sampling`` (docs/methods/); they are recorded for reference,
while the benchmark samples every method with one sampler so that their images stay comparable seed
for seed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.components import Components, SamplerConfig, auto_device
from benchmark.errors import ModelLoadError
from benchmark.full_shape import RANDOM_MODELS, random_model_folder
from benchmark.hashing import hash_value

log = logging.getLogger(__name__)

COMPILE_ENV = "DEBIAS_BENCH_COMPILE"
VAE_SLICING_ENV = "DEBIAS_BENCH_VAE_SLICING"
DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 7.5
SDXL_GUIDANCE = 5.0  # StableDiffusionXLPipeline.__call__'s default


@dataclass(frozen=True)
class Preset:
    name: str
    model_id: str
    resolution: int
    scheduler: str  # the class the model's scheduler_config.json names
    prediction_type: str
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    aliases: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("sd14", "CompVis/stable-diffusion-v1-4", 512, "PNDMScheduler", "epsilon"),
    # runwayml's repo was withdrawn in 2024; the same weights live on in these mirrors (DDM uses sd-legacy).
    Preset("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", 512, "PNDMScheduler", "epsilon",
           aliases=("sd-legacy/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5")),
    Preset("sd21", "stabilityai/stable-diffusion-2-1", 768, "DDIMScheduler", "v_prediction"),
    Preset("sd21-base", "stabilityai/stable-diffusion-2-1-base", 512, "PNDMScheduler", "epsilon"),
    Preset("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", 1024, "EulerDiscreteScheduler", "epsilon",
           guidance=SDXL_GUIDANCE),
)}

def paper_sampling() -> dict[str, dict[str, Any]]:
    """What each registered method's paper/code sampled with (``Method.paper_sampling``), for the record."""
    from methods import METHODS

    out = {}
    for name in METHODS.in_order():
        settings = METHODS.get(name).paper_sampling
        if settings is not None:
            out[name] = dict(settings)
    return out


def resolve(model: str) -> tuple[str, Preset | None]:
    """(model id or path to load, the preset it matches or None)."""
    key = model.strip()
    if key in PRESETS:
        return PRESETS[key].model_id, PRESETS[key]
    for preset in PRESETS.values():
        if key == preset.model_id or key in preset.aliases:
            return key, preset
    return key, None


def _flag(value: bool | None, env: str) -> bool:
    if value is not None:
        return value
    return os.environ.get(env, "0").strip().lower() in {"1", "true", "yes", "on"}


def _looks_local(model: str) -> bool:
    """A path, not a hub id ("owner/name")."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model


def _model_index(model: str) -> Path | None:
    """The pipeline's ``model_index.json``: in a local folder, or a hub id's cached copy."""
    index = Path(model).expanduser() / "model_index.json"
    if index.is_file():
        return index
    if _looks_local(model):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "model_index.json")
    except Exception:  # an invalid repo id or no cache
        return None
    return Path(found) if isinstance(found, str) else None


def is_sdxl(model: str) -> bool:
    """Whether ``model`` is an SDXL pipeline (two text encoders, size conditioning).

    Its ``model_index.json`` decides when there is one (local or cached); otherwise the name does:
    "sdxl", "diffusion-xl" or a separate "xl" word, so ids that merely contain "xl" do not match.
    """
    index = _model_index(model)
    if index is not None:
        try:
            data = json.loads(index.read_text())
        except (OSError, ValueError):
            data = {}
        return "XL" in str(data.get("_class_name", "")) or "text_encoder_2" in data
    name = model.lower()
    return "sdxl" in name or "diffusion-xl" in name or re.search(r"(^|[-_/])xl([-_/.]|$)", name) is not None


def _revision(model_id: str) -> str | None:
    """The cached snapshot (commit) a hub id resolves to, or None for local folders."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "model_index.json")
    except Exception:  # an invalid repo id (a path) or no cache: nothing to record
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def _local_signature(folder: Path) -> dict[str, Any]:
    """Config texts and weight-file sizes of a local pipeline: cheap, and changes when the model does."""
    sig: dict[str, Any] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(folder))
            sig[rel] = p.read_text(errors="replace") if p.suffix in {".json", ".txt"} and p.stat().st_size < 1 << 20 \
                else p.stat().st_size
    return sig


def load_sd(model: str, device: torch.device | None = None, dtype: torch.dtype | None = None,
            compile: bool | None = None, vae_slicing: bool | None = None) -> tuple[Components, dict[str, Any]]:
    """Load a Stable Diffusion 1.x/2.x or SDXL pipeline offline → (components, info recorded in results.json)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if model in RANDOM_MODELS:  # published shapes, random weights, built offline on first use
        model = str(random_model_folder(model))
    model_id, preset = resolve(model)
    xl = is_sdxl(model_id)
    local = Path(model_id).expanduser()
    if _looks_local(model_id) and not local.is_dir():
        raise ModelLoadError(f"{model_id}: local model folder not found (expected a diffusers pipeline folder "
                             "with model_index.json, as written by save_pretrained)")
    source = str(local) if local.is_dir() else model_id
    auto = auto_device()
    device, dtype = device or auto[0], dtype or auto[1]
    try:
        if xl:
            pipe = StableDiffusionXLPipeline.from_pretrained(
                source, torch_dtype=dtype, add_watermarker=False, local_files_only=True, use_safetensors=True)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                source, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False,
                local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        home = os.environ.get("HF_HOME", "~/.cache/huggingface")
        what = f"preset {preset.name} = {model_id!r}" if preset and model != model_id else repr(model_id)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(
            f"model {what} is not available offline ({first}); download it into HF_HOME ({home}) with "
            f"`hf download {model_id}`, or set model to a local pipeline folder") from None
    if xl and (pipe.text_encoder is None or pipe.text_encoder_2 is None):
        raise ModelLoadError(f"model {model_id!r} is an SDXL pipeline without both text encoders (the refiner is "
                             "image-to-image); use an SDXL base model, e.g. the sdxl preset")
    unet, vae = pipe.unet, pipe.vae
    # StableDiffusionXLPipeline decodes in float32 when the VAE asks for it; keeping it there does the same.
    upcast = xl and dtype == torch.float16 and bool(vae.config.get("force_upcast", False))
    if upcast:
        vae.float()  # (not .to(dtype=...): diffusers' ModelMixin.to warns on every dtype cast)
    attention = "default"
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
        attention = "sdpa"
    slicing = _flag(vae_slicing, VAE_SLICING_ENV)
    if slicing:
        vae.enable_slicing()
    compiled = _flag(compile, COMPILE_ENV)
    unet.to(device)
    if compiled:
        unet.compile()  # in place: the module keeps its type, config and hooks
    native = int(unet.config.sample_size) * pipe.vae_scale_factor
    resolution = preset.resolution if preset else native
    steps = preset.steps if preset else DEFAULT_STEPS
    guidance = preset.guidance if preset else SDXL_GUIDANCE if xl else DEFAULT_GUIDANCE
    scheduler = pipe.scheduler
    if preset and type(scheduler).__name__ != preset.scheduler:
        log.warning("%s ships %s, not the %s its preset expects", model_id, type(scheduler).__name__, preset.scheduler)
    revision = _revision(model_id) if not local.is_dir() else None
    info: dict[str, Any] = {
        "model": model_id, "preset": preset.name if preset else None, "revision": revision,
        "resolution": resolution, "native_resolution": native,
        "scheduler": type(scheduler).__name__, "prediction_type": scheduler.config.get("prediction_type", "epsilon"),
        "steps": steps, "guidance": guidance, "dtype": str(dtype).removeprefix("torch."), "device": str(device),
        "attention": attention, "compile": compiled, "vae_slicing": slicing,
        "pipeline": type(pipe).__name__, "vae_dtype": str(vae.dtype).removeprefix("torch."),
        "paper_sampling": paper_sampling(),
    }
    extra: dict[str, Any] = {}
    if xl:
        extra = {"text_encoder_2": pipe.text_encoder_2.to(device), "tokenizer_2": pipe.tokenizer_2,
                 "force_zeros_for_empty_prompt": bool(pipe.config.get("force_zeros_for_empty_prompt", True)),
                 "upcast_vae": upcast}
        info["force_zeros_for_empty_prompt"] = extra["force_zeros_for_empty_prompt"]
    fingerprint = hash_value({
        "model": model_id, "revision": revision, "dtype": info["dtype"], "unet": dict(unet.config),
        "scheduler": dict(scheduler.config),
        "local": _local_signature(local) if local.is_dir() else None,
    })
    components = Components(
        unet=unet, text_encoder=pipe.text_encoder.to(device), tokenizer=pipe.tokenizer, scheduler=scheduler,
        vae=vae.to(device), name=model_id, fingerprint=fingerprint,
        sampler=SamplerConfig(num_inference_steps=steps, guidance_scale=guidance, height=resolution, width=resolution),
        **extra,
    )
    return components, info


def presets_table() -> list[dict[str, Any]]:
    """The presets as rows (for docs and ``list``)."""
    return [asdict(p) for p in PRESETS.values()]
