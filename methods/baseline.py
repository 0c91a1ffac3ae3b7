"""The baseline: the base model sampled as it is, with the plain text-to-image loop.

:func:`benchmark.sampling.sample` is the loop of diffusers' ``StableDiffusionPipeline`` (it gives
the same images, see ``tests/test_sampling.py``) with per-image seeded noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.components import Components
from benchmark.sampling import sample
from methods.base import Method, MethodData


@dataclass
class BaselineParams:
    """The baseline has no hyper-parameters of its own; sampling settings come from the run."""


class Baseline(Method):
    name = "baseline"
    reads = ()
    trains = False
    Params = BaselineParams

    def prepare(self, base: Components, data: MethodData, workdir: Path) -> None:
        self.workdir = workdir
        self.components = base

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        assert self.components is not None, "call prepare() first"
        return sample(self.components, prompts, seeds)
