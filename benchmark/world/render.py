"""Seeded procedural renderer of the world's 8x8 RGB images.

An image is a handwritten glyph (scikit-learn's ``load_digits``, 1797 8x8 scans by 43 writers,
shipped inside scikit-learn) drawn as a coloured stroke on a grey background:

* content (named by the prompt): the digit, or for the non-target set a square or a ring;
* ``color`` (binary): the stroke is red or blue (green for non-target shapes);
* ``shade`` (3 classes): the background is light, mid or dark grey.

Every image varies in position, scale, rotation, stroke thickness, ink strength, colour jitter,
a background gradient and pixel noise, so no single pixel decides an attribute. The glyph is
warped at 16x16 and area-downsampled to 8x8. Everything is a pure function of its arguments.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

COLORS = {"red": (0.92, 0.12, 0.10), "blue": (0.12, 0.25, 0.95), "green": (0.20, 0.80, 0.25)}
SHADES = {"light": 0.80, "mid": 0.48, "dark": 0.14}
COLOR_NAMES = ["red", "blue"]
SHADE_NAMES = ["light", "mid", "dark"]
SHAPES = ["square", "ring"]
SIZE = 8
# Part of every rendered set's fingerprint (benchmark.images): bump it whenever a change here alters
# what an image looks like, so caches and shipped artefacts keyed by the old renderer are not reused.
RENDERER_VERSION = 1


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


def glyph_split(split: str, seed: int = 0, heldout_fraction: float = 0.2) -> dict[int, np.ndarray]:
    """Indices of source glyphs per digit for ``split`` ("train" or "heldout").

    The held-out scans are never used to train any world model, so held-out accuracy is
    measured on handwriting the models have not seen.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    _, target = _digits()
    rng = np.random.default_rng(seed)
    out = {}
    for d in range(10):
        idx = np.flatnonzero(target == d)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(len(idx) * heldout_fraction))
        out[d] = np.sort(idx[:n_held] if split == "heldout" else idx[n_held:])
    return out


def _shape_masks(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """16x16 masks of squares (kind 0) and rings (kind 1) of random size."""
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32) + 0.5
    out = np.zeros((len(kind), 16, 16), np.float32)
    for i, k in enumerate(kind):
        r = rng.uniform(4.0, 6.5)
        if k == 0:
            d = np.maximum(np.abs(yy - 8), np.abs(xx - 8))
        else:
            d = np.hypot(yy - 8, xx - 8)
        out[i] = np.clip(1.6 - np.abs(d - r), 0, 1)
    return out


def render(
    content: np.ndarray,
    color: np.ndarray,
    shade: np.ndarray,
    seed: int,
    split: str = "train",
) -> np.ndarray:
    """Render one image per row; returns uint8 (N, 8, 8, 3).

    content: int (N,): digits 0-9, or 10 + shape index for non-target shapes (10 square, 11 ring).
    color:   int (N,): index into ``COLOR_NAMES`` (ignored for shapes, which are green).
    shade:   int (N,): index into ``SHADE_NAMES``.
    seed:    the only source of randomness; ``split`` picks training or held-out glyph scans.
    """
    content, color, shade = (np.asarray(a, dtype=np.int64) for a in (content, color, shade))
    n = len(content)
    if not (len(color) == len(shade) == n):
        raise ValueError("content, color and shade must have the same length")
    if n == 0:
        return np.zeros((0, SIZE, SIZE, 3), np.uint8)
    if content.min() < 0 or content.max() > 11 or color.min() < 0 or color.max() > 1 or shade.min() < 0 or shade.max() > 2:
        raise ValueError("content must be in 0..11, color in 0..1, shade in 0..2")
    rng = np.random.default_rng(seed)
    images, _ = _digits()
    pools = glyph_split(split)

    glyph16 = np.zeros((n, 16, 16), np.float32)
    is_digit = content < 10
    picks = np.array([rng.choice(pools[int(c)]) if c < 10 else -1 for c in content])
    if is_digit.any():
        src = torch.from_numpy(images[picks[is_digit]])[:, None]
        glyph16[is_digit] = F.interpolate(src, size=(16, 16), mode="bilinear", align_corners=False)[:, 0].numpy()
    if (~is_digit).any():
        glyph16[~is_digit] = _shape_masks(content[~is_digit] - 10, rng)

    # Random similarity transform (scale, rotation, shift) at 16x16.
    scale = rng.uniform(0.85, 1.12, n)
    angle = np.deg2rad(rng.uniform(-12, 12, n))
    shift = rng.uniform(-0.12, 0.12, (n, 2))
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack([np.stack([cos, -sin, shift[:, 0]], 1), np.stack([sin, cos, shift[:, 1]], 1)], 1)
    g = torch.from_numpy(glyph16)[:, None]
    grid = F.affine_grid(torch.from_numpy(theta).float(), list(g.shape), align_corners=False)
    g = F.grid_sample(g, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Stroke thickness: blend towards a 3x3 dilation.
    thick = torch.from_numpy(rng.uniform(0.0, 0.6, n)).float()[:, None, None, None]
    g = (1 - thick) * g + thick * F.max_pool2d(g, 3, stride=1, padding=1)
    alpha = F.avg_pool2d(g, 2)[:, 0].numpy()
    alpha = np.clip(alpha * rng.uniform(1.0, 1.3, (n, 1, 1)), 0, 1)[..., None]

    stroke = np.array([COLORS[COLOR_NAMES[c]] if k < 10 else COLORS["green"] for c, k in zip(color, content, strict=True)], np.float32)
    stroke = np.clip(stroke + rng.normal(0, 0.05, (n, 3)), 0, 1)[:, None, None, :]
    level = np.array([SHADES[SHADE_NAMES[s]] for s in shade], np.float32) + rng.uniform(-0.06, 0.06, n)
    tint = rng.normal(0, 0.02, (n, 3))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1) - 0.5
    direction = rng.normal(0, 0.06, (n, 2))
    gradient = direction[:, 0, None, None] * yy + direction[:, 1, None, None] * xx
    background = (level[:, None, None] + gradient)[..., None] + tint[:, None, None, :]
    img = (1 - alpha) * background + alpha * stroke
    img = img + rng.normal(0, 0.025, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
