"""The world CLIP: a small open_clip model trained contrastively on world image/caption pairs.

Architecture: ``world-clip.json`` (a 3-layer ViT on 8x8 images with 2x2 patches, a 2-layer text
transformer over open_clip's bundled BPE tokenizer, 64-d joint space). Captions name the content
and, usually, both attributes ("a photo of a red seven on a dark background"), so that the space
separates content, colour and shade; it serves CLIP-T/CLIP-I scores, zero-shot classification,
FID features and SelfDebias's embedding space in the world. Loss: symmetric InfoNCE (Radford et
al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"); duplicate
captions in a batch are treated as positives of each other (soft targets), since many images
share a caption.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from benchmark.world.config import WorldConfig
from benchmark.world.data import CONTENT_NAMES, balanced_labels, caption
from benchmark.world.render import COLOR_NAMES, SHADE_NAMES, SHAPES, render

CLIP_CONFIG = Path(__file__).resolve().parent / "world-clip.json"
CLIP_NAME = CLIP_CONFIG.stem

# Zero-shot class texts, per attribute (these are also the prompt sets' ``templates``).
TEMPLATES: dict[str, dict[str, str]] = {
    "color": {c: f"a {c} glyph" for c in COLOR_NAMES},
    "shade": {s: f"a glyph on a {s} background" for s in SHADE_NAMES},
    "digit": {d: f"a photo of a {d}" for d in CONTENT_NAMES[:10]},
}


@dataclass
class ClipConfig:
    steps: int = 1500
    batch_size: int = 256
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0


def world_clip_model():
    import open_clip

    open_clip.add_model_config(CLIP_CONFIG)
    return open_clip.create_model(CLIP_NAME, pretrained=None), open_clip.get_tokenizer(CLIP_NAME)


def _captions(labels: dict[str, np.ndarray], rng: np.random.Generator) -> list[str]:
    """Mostly full descriptions; some name one attribute or none, and some use the zero-shot texts."""
    out = []
    for c, col, sh in zip(labels["content"], labels["color"], labels["shade"], strict=True):
        c, sh = int(c), int(sh)
        col = int(col) if col >= 0 else None
        r = rng.random()
        if r < 0.5:
            out.append(caption(c, color=col, shade=sh))
        elif r < 0.6:
            out.append(caption(c, color=col))
        elif r < 0.7:
            out.append(caption(c, shade=sh))
        elif r < 0.8:
            out.append(caption(c))
        elif r < 0.9 and col is not None:
            out.append(TEMPLATES["color"][COLOR_NAMES[col]])
        else:
            out.append(TEMPLATES["shade"][SHADE_NAMES[sh]])
    return out


def _batch_source(config: WorldConfig, seed: int):
    labels = balanced_labels(400, seed)
    n_shapes = 400
    rng = np.random.default_rng(seed)
    labels = {
        "content": np.concatenate([labels["content"], 10 + rng.integers(0, len(SHAPES), n_shapes)]),
        "color": np.concatenate([labels["color"], np.full(n_shapes, -1)]),
        "shade": np.concatenate([labels["shade"], rng.integers(0, 3, n_shapes)]),
    }
    images = render(labels["content"], np.maximum(labels["color"], 0), labels["shade"], seed=seed + 1)
    order = rng.permutation(len(images))
    caps = _captions(labels, rng)
    return images[order], [caps[i] for i in order]


def train_world_clip(config: WorldConfig, cfg: ClipConfig, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train the world CLIP from scratch; returns the model and its training statistics."""
    from benchmark.embedding import OpenClipEmbedder

    torch.manual_seed(cfg.seed)
    model, tokenizer = world_clip_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=min(0.3, cfg.warmup / cfg.steps))
    # Reuse the embedder's preprocessing so training and use see identical inputs.
    pre = OpenClipEmbedder.__new__(OpenClipEmbedder)
    pre.image_size = (8, 8)
    from open_clip import get_model_preprocess_cfg

    pcfg = get_model_preprocess_cfg(model)
    pre.mean, pre.std = np.asarray(pcfg["mean"], np.float32), np.asarray(pcfg["std"], np.float32)
    start = time.perf_counter()
    epoch, pos = 0, 0
    images, caps = _batch_source(config, config.seed * 1000 + 50)
    losses = []
    for _step in tqdm(range(cfg.steps), desc="world clip", disable=not progress):
        if pos + cfg.batch_size > len(images):
            epoch, pos = epoch + 1, 0
            images, caps = _batch_source(config, config.seed * 1000 + 50 + 7 * epoch)
        x = pre.preprocess(images[pos: pos + cfg.batch_size])
        texts = caps[pos: pos + cfg.batch_size]
        pos += cfg.batch_size
        ids = tokenizer(texts)
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(ids), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)
        target = same / same.sum(dim=1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    stats = {"seconds": round(time.perf_counter() - start, 1), "final_loss": float(np.mean(losses[-50:])),
             "config": asdict(cfg)}
    return model, stats
