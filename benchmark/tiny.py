"""Tiny randomly initialised Stable-Diffusion-architecture components (SD and SDXL), built from configs.

Used by the tests (the real-profile code path without a GPU or a model hub) and by anyone who
wants to smoke-test a method. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, PreTrainedTokenizerFast

from benchmark.components import Components, SamplerConfig

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]
TINY_WORDS = "a photo of the person doctor nurse firefighter face male female red blue".split()


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
    tokenizer = word_tokenizer(TINY_WORDS, max_length=16)
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


def tiny_clip_tokenizer(folder: str | Path, words: list[str] | None = None, max_length: int = 16):
    """A real ``CLIPTokenizer`` over a tiny byte-level BPE vocabulary written to ``folder``.

    The vocabulary is CLIP's 256 byte symbols, each also with the end-of-word mark ``</w>``, plus one
    merge chain per word in ``words`` (so those words are single tokens) and the two special tokens.
    Any text still tokenizes (unknown words fall back to bytes). Files: vocab.json, merges.txt.
    """
    import json

    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = []
    for word in words or []:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:  # merge left to right: w o r d</w> → wo r d</w> → wor d</w> → word</w>
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.append(parts[0])
    vocab = list(dict.fromkeys(vocab + ["<|startoftext|>", "<|endoftext|>"]))
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=max_length, pad_token="<|endoftext|>")


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE (GPT-2, CLIP) uses for bytes, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def save_tiny_sd_pipeline(path: str | Path, seed: int = 0, resolution: int = 16) -> Path:
    """Write a randomly initialised tiny ``StableDiffusionPipeline`` (UNet, VAE, CLIP text encoder,
    CLIPTokenizer, DDIM) to ``path`` with ``save_pretrained``: the on-disk layout of a real SD model."""
    import tempfile

    from diffusers import StableDiffusionPipeline

    parts = tiny_sd_components(seed=seed, resolution=resolution)
    words = "a photo of the person doctor nurse face red blue warm cool".split()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_clip_tokenizer(tmp, words, max_length=16)
        bpe_files = {name: (Path(tmp) / name).read_bytes() for name in ("vocab.json", "merges.txt")}
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
    pipe = StableDiffusionPipeline(
        vae=parts.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=parts.unet, scheduler=parts.scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    # Hub SD repos ship the tokenizer as vocab.json + merges.txt (no tokenizer.json): keep that layout.
    tok_dir = Path(path) / "tokenizer"
    (tok_dir / "tokenizer.json").unlink(missing_ok=True)
    for name, data in bpe_files.items():
        (tok_dir / name).write_bytes(data)
    return Path(path)


# -- SDXL ------------------------------------------------------------------------------------------
# Shapes after diffusers' tests/pipelines/stable_diffusion_xl/test_stable_diffusion_xl.py
# (get_dummy_components), with two encoders of different widths so that the order of the
# concatenation matters: cross-attention width 16 + 32, pooled width 24, time ids 6 x 8.
SDXL_WIDTHS, SDXL_PROJECTION, SDXL_TIME_DIM = (16, 32), 24, 8


def _tiny_sdxl_encoders(vocab_size: int, pad: int, bos: int, eos: int, seed: int):
    torch.manual_seed(seed)
    encoders = []
    for width, cls in zip(SDXL_WIDTHS, (CLIPTextModel, CLIPTextModelWithProjection), strict=True):
        config = CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16, projection_dim=SDXL_PROJECTION,
            pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, hidden_act="gelu")
        encoders.append(cls(config).eval())
    return encoders


def tiny_sdxl_components(seed: int = 0, resolution: int = 16) -> Components:
    """A randomly initialised SDXL-style model: a UNet with ``addition_embed_type="text_time"``, a
    ``CLIPTextModel`` and a ``CLIPTextModelWithProjection`` (word-level tokenizers), a VAE and DDIM."""
    base = tiny_sd_components(seed=seed, resolution=resolution)  # the VAE and the scheduler
    tokenizer = base.tokenizer
    text_encoder, text_encoder_2 = _tiny_sdxl_encoders(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id,
                                                       tokenizer.eos_token_id, seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=resolution // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=sum(SDXL_WIDTHS),
        attention_head_dim=4,
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_DIM,
        projection_class_embeddings_input_dim=6 * SDXL_TIME_DIM + SDXL_PROJECTION,
    ).eval()
    return Components(
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=base.scheduler,
        vae=base.vae,
        name=f"tiny-sdxl-{seed}",
        fingerprint=f"tiny-sdxl-{seed}-{resolution}",
        sampler=SamplerConfig(num_inference_steps=4, guidance_scale=5.0, height=resolution, width=resolution),
        text_encoder_2=text_encoder_2,
        tokenizer_2=word_tokenizer(TINY_WORDS, max_length=16),
        force_zeros_for_empty_prompt=True,
    )


def save_tiny_sdxl_pipeline(path: str | Path, seed: int = 0, resolution: int = 16) -> Path:
    """Write a randomly initialised tiny ``StableDiffusionXLPipeline`` (UNet with text-time embedding,
    VAE, CLIP text encoder + CLIP text encoder with projection, two CLIPTokenizers, DDIM) to ``path``
    with ``save_pretrained``: the on-disk layout of SDXL base."""
    import tempfile

    from diffusers import StableDiffusionXLPipeline

    parts = tiny_sdxl_components(seed=seed, resolution=resolution)
    words = "a photo of the person doctor nurse face red blue warm cool".split()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_clip_tokenizer(tmp, words, max_length=16)
        bpe_files = {name: (Path(tmp) / name).read_bytes() for name in ("vocab.json", "merges.txt")}
    text_encoder, text_encoder_2 = _tiny_sdxl_encoders(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id,
                                                       tokenizer.eos_token_id, seed)
    pipe = StableDiffusionXLPipeline(
        vae=parts.vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=parts.unet, scheduler=parts.scheduler, force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    for folder in ("tokenizer", "tokenizer_2"):  # vocab.json + merges.txt, as on the hub
        tok_dir = Path(path) / folder
        (tok_dir / "tokenizer.json").unlink(missing_ok=True)
        for name, data in bpe_files.items():
            (tok_dir / name).write_bytes(data)
    return Path(path)
