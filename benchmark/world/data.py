"""The world's image sets and captions, drawn from a :class:`WorldConfig`.

* ``training_set``: the biased training set; in each digit's images the attribute classes appear in
  exactly the configured shares (quota sampling, so the set's bias *is* the configured bias).
* ``nontarget_set``: green squares and rings, unrelated to the digits (DDM's non-target images).
* ``reference_set``: balanced over digit x colour x shade (the FID reference).
* ``heldout_set``: balanced and rendered from held-out glyph scans, for classifier accuracy.
"""

from __future__ import annotations

import functools

import numpy as np

from benchmark.images import ImageSet, LazyImageSet
from benchmark.world.config import DIGITS, WorldConfig
from benchmark.world.render import COLOR_NAMES, RENDERER_VERSION, SHADE_NAMES, SHAPES, render

PROMPT_TEMPLATE = "a photo of a {}"
SHADE_SUFFIX = " on a {} background"
CONTENT_NAMES = DIGITS + SHAPES


def plain_caption(content: int) -> str:
    return PROMPT_TEMPLATE.format(CONTENT_NAMES[content])


def caption(content: int, color: int | None = None, shade: int | None = None) -> str:
    """Caption naming the content and, optionally, the colour and/or the shade."""
    noun = CONTENT_NAMES[content]
    if color is not None and content < 10:
        noun = f"{COLOR_NAMES[color]} {noun}"
    text = PROMPT_TEMPLATE.format(noun)
    if shade is not None:
        text += SHADE_SUFFIX.format(SHADE_NAMES[shade])
    return text


def vocabulary() -> list[str]:
    """Every word a world caption can contain (the generator's word-level tokenizer)."""
    words = "a photo of on background".split() + CONTENT_NAMES + COLOR_NAMES + SHADE_NAMES
    return list(dict.fromkeys(words))


def quota(n: int, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n`` class indices with counts as close as possible to ``n * shares``, in random order."""
    raw = np.asarray(shares, float) * n
    counts = np.floor(raw).astype(int)
    # Largest remainders get the leftover images, so the counts sum to n.
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return rng.permutation(np.repeat(np.arange(len(shares)), counts))


def training_labels(config: WorldConfig, seed: int, per_class: int | None = None) -> dict[str, np.ndarray]:
    """Content and attribute labels of a biased set: per digit, attributes in the configured shares."""
    rng = np.random.default_rng(seed)
    n = per_class or config.images_per_class
    content, color, shade = [], [], []
    for d, name in enumerate(DIGITS):
        content.append(np.full(n, d))
        color.append(quota(n, config.shares[name]["color"], rng))
        shade.append(quota(n, config.shares[name]["shade"], rng))
    return {"content": np.concatenate(content), "color": np.concatenate(color), "shade": np.concatenate(shade)}


def render_recipe(labels: dict[str, np.ndarray], seed: int, split: str) -> dict:
    """What :func:`render` is a function of: the set's fingerprint, the same on every CPU."""
    return {"renderer": RENDERER_VERSION, "seed": int(seed), "split": split,
            "labels": {k: np.asarray(v, dtype=np.int64).tolist() for k, v in sorted(labels.items())}}


def _imageset(name: str, labels: dict[str, np.ndarray], seed: int, split: str = "train",
              captions: list[str] | None = None, lazy: bool = False) -> ImageSet:
    """``lazy``: rendered when the images are first read (the fingerprint is the recipe's either way)."""
    if captions is None:
        captions = [plain_caption(int(c)) for c in labels["content"]]
    recipe, labels = render_recipe(labels, seed, split), {k: np.asarray(v) for k, v in labels.items()}
    if lazy:
        # the renderer is bound now, as an eager set would have called it now
        make = functools.partial(render, labels["content"], labels["color"], labels["shade"], seed=seed, split=split)
        return LazyImageSet(make, captions, name, recipe, labels)
    images = render(labels["content"], labels["color"], labels["shade"], seed=seed, split=split)
    return ImageSet(images, captions, name=name, labels=labels, recipe=recipe)


def training_set(config: WorldConfig, per_class: int | None = None, lazy: bool = False) -> ImageSet:
    """The biased training set, captioned with the plain prompt of its digit (``lazy``: rendered on first use)."""
    labels = training_labels(config, config.seed + 1, per_class)
    return _imageset("world-train", labels, seed=config.seed + 2, lazy=lazy)


def nontarget_set(config: WorldConfig, n: int | None = None, lazy: bool = False) -> ImageSet:
    """Green squares and rings on balanced shades: content 10/11, colour label -1 (not red/blue);
    ``lazy``: rendered on first use."""
    n = n or config.nontarget_images
    rng = np.random.default_rng(config.seed + 3)
    content = 10 + quota(n, np.ones(len(SHAPES)) / len(SHAPES), rng)
    shade = quota(n, np.ones(3) / 3, rng)
    drawn = {"content": content, "color": np.zeros(n, int), "shade": shade}  # shapes ignore the colour index
    labels = {"content": content, "color": np.full(n, -1), "shade": shade}
    captions, recipe = [plain_caption(int(c)) for c in content], render_recipe(drawn, config.seed + 4, "train")
    if lazy:
        make = functools.partial(render, drawn["content"], drawn["color"], drawn["shade"], seed=config.seed + 4)
        return LazyImageSet(make, captions, "world-nontarget", recipe, labels)
    images = render(drawn["content"], drawn["color"], drawn["shade"], seed=config.seed + 4)
    return ImageSet(images, captions, name="world-nontarget", labels=labels, recipe=recipe)


def balanced_labels(per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Per digit, colour and shade each exactly balanced (as far as ``per_class`` allows)."""
    rng = np.random.default_rng(seed)
    content, color, shade = [], [], []
    for d in range(len(DIGITS)):
        content.append(np.full(per_class, d))
        color.append(quota(per_class, np.ones(2) / 2, rng))
        shade.append(quota(per_class, np.ones(3) / 3, rng))
    return {"content": np.concatenate(content), "color": np.concatenate(color), "shade": np.concatenate(shade)}


def reference_set(config: WorldConfig, per_class: int | None = None, lazy: bool = False) -> ImageSet:
    """Balanced renders from the training glyphs (the FID reference distribution; ``lazy``: rendered on
    first use)."""
    labels = balanced_labels(per_class or config.reference_images_per_class, config.seed + 5)
    return _imageset("world-reference", labels, seed=config.seed + 6, lazy=lazy)


def heldout_set(config: WorldConfig, per_class: int | None = None, seed_offset: int = 0, lazy: bool = False) -> ImageSet:
    """Balanced renders from held-out glyph scans, for classifier accuracy and confusion matrices
    (``lazy``: rendered on first use)."""
    labels = balanced_labels(per_class or config.heldout_images_per_class, config.seed + 7 + seed_offset)
    return _imageset("world-heldout", labels, seed=config.seed + 8 + seed_offset, split="heldout", lazy=lazy)


def generator_captions(labels: dict[str, np.ndarray], rng: np.random.Generator, drop: float = 0.1) -> list[str]:
    """Training captions: mostly the plain prompt, sometimes naming colour and/or shade, and
    ``drop`` of them empty (classifier-free guidance needs an unconditional model)."""
    out = []
    u = rng.random((len(labels["content"]), 2))
    for i, c in enumerate(labels["content"]):
        if u[i, 0] < drop:
            out.append("")
            continue
        col = int(labels["color"][i]) if labels["color"][i] >= 0 else None
        r = u[i, 1]
        if r < 0.55:
            out.append(caption(int(c)))
        elif r < 0.70:
            out.append(caption(int(c), color=col))
        elif r < 0.85:
            out.append(caption(int(c), shade=int(labels["shade"][i])))
        else:
            out.append(caption(int(c), color=col, shade=int(labels["shade"][i])))
    return out


def clip_captions(labels: dict[str, np.ndarray]) -> list[str]:
    """Full descriptions for the world CLIP: content and both attributes."""
    out = []
    for c, col, sh in zip(labels["content"], labels["color"], labels["shade"], strict=True):
        col = int(col) if col >= 0 else None
        out.append(caption(int(c), color=col, shade=int(sh)))
    return out
