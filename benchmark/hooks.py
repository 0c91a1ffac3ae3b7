"""The one shared place where methods hook into the UNet's mid-block ("h-space").

SelfDebias, DiffLens and similar h-space methods read or replace the output of
``unet.mid_block``. Going through these helpers keeps one convention for every method:
the hook sees the whole batch as the UNet sees it; with classifier-free guidance the batch
is ``[uncond; cond]`` (diffusers order) and :func:`split_branches` splits it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

MidBlockFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def mid_block(unet: torch.nn.Module) -> torch.nn.Module:
    block = getattr(unet, "mid_block", None)
    if block is None:
        raise TypeError(f"{type(unet).__name__} has no mid_block; h-space methods need a UNet2DConditionModel")
    return block


@contextmanager
def mid_block_hook(unet: torch.nn.Module, fn: MidBlockFn) -> Iterator[None]:
    """Call ``fn(h)`` on every mid-block output; a returned tensor replaces ``h``."""

    def hook(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return fn(output)

    handle = mid_block(unet).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def record_mid_block(unet: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect a detached CPU copy of every mid-block output, in call order."""
    recorded: list[torch.Tensor] = []

    def keep(h: torch.Tensor) -> None:
        recorded.append(h.detach().to("cpu", torch.float32))

    with mid_block_hook(unet, keep):
        yield recorded


def split_branches(h: torch.Tensor, cfg: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Split a CFG batch ``[uncond; cond]`` into (uncond, cond); without CFG, (None, h)."""
    if not cfg:
        return None, h
    uncond, cond = h.chunk(2)
    return uncond, cond
