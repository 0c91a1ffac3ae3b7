"""Tiny randomly initialised Stable-Diffusion-architecture components, built from configs.

Used by the tests (the real-profile code path without a GPU or a model hub) and by anyone who
wants to smoke-test a method. Nothing is downloaded.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from benchmark.components import Components, SamplerConfig

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def word_tokenizer(words: list[str], max_length: int = 16) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a fixed vocabulary; works offline, pads to ``max_length``."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers.processors import TemplateProcessing

    core.post_processor = TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    from tokenizers import normalizers

    core.normalizer = normalizers.Lowercase()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=max_length,
    )
    return tok


def tiny_sd_components(seed: int = 0, with_vae: bool = True, resolution: int = 16) -> Components:
    """A randomly initialised SD-style model: UNet with cross-attention, CLIP text encoder, VAE."""
    torch.manual_seed(seed)
    words = "a photo of the person doctor nurse firefighter face male female red blue".split()
    tokenizer = word_tokenizer(words, max_length=16)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    ).eval()
    latent_channels = 4 if with_vae else 3
    unet = UNet2DConditionModel(
        sample_size=resolution // (2 if with_vae else 1),
        in_channels=latent_channels,
        out_channels=latent_channels,
        layers_per_block=1,
        block_out_channels=(32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()
    vae = None
    if with_vae:
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(16, 16),
            latent_channels=4,
            norm_num_groups=8,
            layers_per_block=1,
        ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    return Components(
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        vae=vae,
        name=f"tiny-sd-{seed}",
        fingerprint=f"tiny-sd-{seed}-{int(with_vae)}-{resolution}",
        sampler=SamplerConfig(num_inference_steps=4, guidance_scale=3.0, height=resolution, width=resolution),
    )
