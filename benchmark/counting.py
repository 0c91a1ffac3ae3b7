"""Counting UNet evaluations: the hardware-independent part of a method's sampling cost.

One *evaluation* is one image passing through one UNet once; a classifier-free-guidance step costs
two (the ``[uncond; cond]`` batch), a method that runs a second UNet or a second pass costs more.
Counted with a global module forward hook, so wrappers, merged LoRA copies and guide networks are
all seen without the method's cooperation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def count_unet_evaluations(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn()`` and return its result with the number of UNet image evaluations it made."""
    from diffusers import UNet2DConditionModel

    count = 0

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
        nonlocal count
        if isinstance(module, UNet2DConditionModel):
            sample = args[0] if args else kwargs.get("sample")
            count += int(sample.shape[0]) if isinstance(sample, torch.Tensor) else 1

    handle = torch.nn.modules.module.register_module_forward_hook(hook, with_kwargs=True)
    try:
        result = fn()
    finally:
        handle.remove()
    return result, count
