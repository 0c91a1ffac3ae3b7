"""Stable Diffusion 1.5 and SDXL base at their published shapes, with random weights, built offline.

Images are noise, but every tensor has its real shape and every operation its real cost: SD 1.5's
859.5 M-parameter UNet with a 1280-channel mid-block and 768-wide text context; SDXL's 2.6 B-parameter
UNet, two text encoders (768 + 1280 = 2048-wide context, 1280-wide pooled embedding) and size
conditioning. The real profile loads them like any diffusers folder (``--model sd15-random``), so a
method's shape, dtype and memory faults show up here rather than after a user's download.

The configurations are those of the published ``model_index.json`` / ``config.json`` files of
``stable-diffusion-v1-5/stable-diffusion-v1-5`` and ``stabilityai/stable-diffusion-xl-base-1.0``
(UNet, VAE, CLIP text encoders, scheduler). The tokenizer is a byte-pair CLIP tokenizer over a small
vocabulary (no download), padded to the real 77 tokens.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import ConfigError

RANDOM_MODELS = ("sd15-random", "sdxl-random")
CACHE_ENV = "DEBIAS_BENCH_RANDOM_MODELS"  # where the built folders are kept (default: ~/.cache/debias-bench)
WORDS = ("a photo of the person doctor nurse face red blue warm cool man woman young old glyph zero one two "
         "three four five six seven eight nine light mid dark background").split()

SD15_UNET: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu", downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, norm_eps=1e-5, center_input_sample=False,
)
SDXL_UNET: dict[str, Any] = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True,
    freq_shift=0, norm_eps=1e-5,
)
VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu",
    norm_num_groups=32,
)
CLIP_L: dict[str, Any] = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
OPENCLIP_BIGG: dict[str, Any] = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                     num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                                     projection_dim=1280)
SCHEDULER: dict[str, Any] = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 num_train_timesteps=1000, steps_offset=1)


def _tokenizer(folder: str):
    from benchmark.tiny import tiny_clip_tokenizer

    return tiny_clip_tokenizer(folder, WORDS, max_length=77)


def _text_encoder(cls: type, shape: dict[str, Any], tokenizer) -> torch.nn.Module:
    from transformers import CLIPTextConfig

    config = CLIPTextConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **shape)
    return cls(config).eval()


def build_pipeline(kind: str, seed: int = 0):
    """The ``StableDiffusionPipeline`` (``sd15-random``) or ``StableDiffusionXLPipeline``
    (``sdxl-random``) with published shapes and seeded random weights, in float32."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if kind not in RANDOM_MODELS:
        raise ConfigError(f"unknown random model {kind!r}; known: {', '.join(RANDOM_MODELS)}")
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(tmp)
    if kind == "sd15-random":
        return StableDiffusionPipeline(
            vae=AutoencoderKL(sample_size=512, scaling_factor=0.18215, **VAE).eval(),
            text_encoder=_text_encoder(CLIPTextModel, CLIP_L, tokenizer), tokenizer=tokenizer,
            unet=UNet2DConditionModel(**SD15_UNET).eval(),
            scheduler=PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **SCHEDULER),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(sample_size=1024, scaling_factor=0.13025, force_upcast=True, **VAE).eval(),
        text_encoder=_text_encoder(CLIPTextModel, {**CLIP_L, "projection_dim": 768}, tokenizer),
        text_encoder_2=_text_encoder(CLIPTextModelWithProjection, OPENCLIP_BIGG, tokenizer),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=UNet2DConditionModel(**SDXL_UNET).eval(),
        scheduler=EulerDiscreteScheduler(timestep_spacing="leading", interpolation_type="linear",
                                         use_karras_sigmas=False, **SCHEDULER),
        force_zeros_for_empty_prompt=True, add_watermarker=False)


def random_model_folder(kind: str, root: str | Path | None = None, seed: int = 0) -> Path:
    """A saved ``kind`` pipeline folder, built (once, about a minute) into ``root/<kind>-seed<seed>``."""
    root = Path(root or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "debias-bench") / "random-models"
    folder = root / f"{kind}-seed{seed}"
    if (folder / "model_index.json").is_file():
        return folder
    staging = root / f".{kind}-seed{seed}.{os.getpid()}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    build_pipeline(kind, seed).save_pretrained(str(staging), safe_serialization=True)
    try:
        staging.replace(folder)
    except OSError:  # another process finished first: keep its folder
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return folder
