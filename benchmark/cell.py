"""The unit the loop passes between stages: one (method, prompt set, prompt) with its images and predictions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Cell:
    """The images of one (method, prompt set, prompt) with their predictions."""

    method: str
    prompt_set: str
    prompt_id: str
    prompt: str
    seeds: list[int]
    images: np.ndarray | None = None
    shas: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # classifier -> attr -> probs
    has_subject: dict[str, np.ndarray] = field(default_factory=dict)  # classifier -> bool (N,)
    failed: bool = False
    vectors: Any = None  # benchmark.quality.Vectors once scored
