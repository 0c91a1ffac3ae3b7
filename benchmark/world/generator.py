"""The world's base text-to-image generator: Stable Diffusion's architecture at toy size.

A diffusers ``UNet2DConditionModel`` (cross-attention at 4x4 and in the mid-block, plus the pooled
text added to the time embedding, diffusers' ``addition_embed_type="text"``) denoises 8x8 RGB
images directly (pixel space: ``Components.vae is None``), conditioned on a transformers
``CLIPTextModel`` over a word-level tokenizer, with a DDIM scheduler. It is trained with the
usual epsilon-prediction loss (Ho et al. 2020) and 10 % empty captions for classifier-free
guidance (Ho & Salimans 2022); the shipped weights are an exponential moving average.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

from benchmark.images import to_tensor
from benchmark.tiny import word_tokenizer
from benchmark.world.config import WorldConfig
from benchmark.world.data import generator_captions, training_labels, vocabulary
from benchmark.world.render import SHAPES, render

log = logging.getLogger(__name__)


@dataclass
class GeneratorConfig:
    """Architecture and training recipe of the world generator."""

    block_out_channels: tuple[int, ...] = (64, 64)
    layers_per_block: int = 1
    text_width: int = 64
    text_layers: int = 2
    max_length: int = 16
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    steps: int = 6000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    cfg_drop: float = 0.1
    nontarget_share: float = 0.08
    seed: int = 0
    checkpoint_every: int = 500
    # A trained generator folder to start from instead of random weights (used to derive the
    # alternative world's generator from the default one by fine-tuning on its data).
    init_from: str | None = None
    extra: dict = field(default_factory=dict)


def build_models(cfg: GeneratorConfig) -> tuple[UNet2DConditionModel, CLIPTextModel, object, DDIMScheduler]:
    """Freshly initialised UNet, text encoder, tokenizer and scheduler."""
    torch.manual_seed(cfg.seed)
    tokenizer = word_tokenizer(vocabulary(), max_length=cfg.max_length)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_width,
            intermediate_size=2 * cfg.text_width,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=4,
            max_position_embeddings=cfg.max_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=cfg.layers_per_block,
        block_out_channels=cfg.block_out_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(cfg.block_out_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(cfg.block_out_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=cfg.text_width,
        attention_head_dim=16,
        norm_num_groups=32,
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_schedule=cfg.beta_schedule,
        clip_sample=True,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    return unet, text_encoder, tokenizer, scheduler


def _epoch_batch_source(world: WorldConfig, cfg: GeneratorConfig, epoch: int):
    """A freshly rendered biased epoch (new glyph choices and jitter) plus non-target shapes."""
    labels = training_labels(world, seed=cfg.seed * 7919 + 11 * epoch + 1)
    n_shapes = int(len(labels["content"]) * cfg.nontarget_share)
    rng = np.random.default_rng(cfg.seed * 7919 + 11 * epoch + 2)
    labels = {
        "content": np.concatenate([labels["content"], 10 + rng.integers(0, len(SHAPES), n_shapes)]),
        "color": np.concatenate([labels["color"], np.full(n_shapes, -1)]),
        "shade": np.concatenate([labels["shade"], rng.integers(0, 3, n_shapes)]),
    }
    images = render(labels["content"], np.maximum(labels["color"], 0), labels["shade"], seed=cfg.seed * 7919 + 11 * epoch + 3)
    captions = generator_captions(labels, rng, drop=cfg.cfg_drop)
    order = rng.permutation(len(images))
    return to_tensor(images[order]), [captions[i] for i in order]


def save_generator(out_dir: Path, unet, text_encoder, tokenizer, scheduler) -> None:
    """diffusers/transformers folder layout (safetensors weights + JSON configs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out_dir / "unet", safe_serialization=True)
    text_encoder.save_pretrained(out_dir / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out_dir / "tokenizer")
    scheduler.save_pretrained(out_dir / "scheduler")


def train_generator(world: WorldConfig, cfg: GeneratorConfig, out_dir: Path | None = None,
                    progress: bool = True, log_file: Path | None = None) -> dict:
    """Train from scratch; writes EMA checkpoints to ``out_dir`` every ``checkpoint_every`` steps.

    Returns the trained (EMA) models and the training statistics.
    """
    unet, text_encoder, tokenizer, scheduler = build_models(cfg)
    if cfg.init_from is not None:
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(Path(cfg.init_from) / "unet").state_dict())
        text_encoder.load_state_dict(CLIPTextModel.from_pretrained(Path(cfg.init_from) / "text_encoder").state_dict())
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    for p in list(ema_unet.parameters()) + list(ema_text.parameters()):
        p.requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(cfg.seed)
    alphas = scheduler.alphas_cumprod
    epoch, pos = 0, 0
    images, captions = _epoch_batch_source(world, cfg, epoch)
    start = time.perf_counter()
    ema_loss, history = None, []
    bar = tqdm(range(cfg.steps), desc="generator", disable=not progress)
    for step in bar:
        if pos + cfg.batch_size > len(images):
            epoch, pos = epoch + 1, 0
            images, captions = _epoch_batch_source(world, cfg, epoch)
        x0 = images[pos: pos + cfg.batch_size]
        caps = captions[pos: pos + cfg.batch_size]
        pos += cfg.batch_size
        ids = tokenizer(caps, padding="max_length", max_length=cfg.max_length, truncation=True,
                        return_tensors="pt").input_ids
        t = torch.randint(0, cfg.train_timesteps, (len(x0),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        text = text_encoder(ids)[0]
        pred = unet(xt, t, encoder_hidden_states=text).sample
        loss = F.mse_loss(pred, noise)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for src, dst in ((unet, ema_unet), (text_encoder, ema_text)):
                for p_ema, p in zip(dst.parameters(), src.parameters(), strict=True):
                    p_ema.lerp_(p.detach(), 1 - decay)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if (step + 1) % 50 == 0:
            bar.set_postfix(loss=f"{ema_loss:.4f}")
            history.append({"step": step + 1, "loss": round(ema_loss, 5),
                            "seconds": round(time.perf_counter() - start, 1)})
            if log_file is not None:
                with open(log_file, "a") as f:
                    f.write(json.dumps(history[-1]) + "\n")
        if out_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save_generator(out_dir / f"step{step + 1:06d}", ema_unet, ema_text, tokenizer, scheduler)
    seconds = time.perf_counter() - start
    if out_dir is not None:
        save_generator(out_dir / "final", ema_unet, ema_text, tokenizer, scheduler)
    return {
        "unet": ema_unet, "text_encoder": ema_text, "tokenizer": tokenizer, "scheduler": scheduler,
        "stats": {"seconds": round(seconds, 1), "steps": cfg.steps, "final_loss": ema_loss,
                  "history": history, "config": asdict(cfg)},
    }


if __name__ == "__main__":  # pragma: no cover - used to run long trainings in the background
    import argparse

    from benchmark.world.config import load_world_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--variant", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", help="start from this trained generator folder (fine-tuning)")
    ap.add_argument("--json", default="{}", help="GeneratorConfig overrides as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = json.loads(args.json)
    if "block_out_channels" in overrides:
        overrides["block_out_channels"] = tuple(overrides["block_out_channels"])
    gcfg = GeneratorConfig(steps=args.steps, init_from=args.init, **overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    result = train_generator(load_world_config(args.variant), gcfg, out_dir=args.out, progress=False,
                             log_file=args.out / "log.jsonl")
    (args.out / "stats.json").write_text(json.dumps(result["stats"], indent=1))
