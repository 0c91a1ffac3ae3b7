"""The world's prompts and their true bias.

Plain prompts ("a photo of a seven") name only the content; their true attribute shares are the
configured training shares. Conditional prompts name one attribute value ("a photo of a blue
zero", "a photo of a one on a light background"); for each attribute they are made for the two
most biased digits, naming the minority class, so they test that conditioning overrides the bias.
Their truth is one-hot on the named attribute and the configured shares on the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmark.world.config import DIGITS, WorldConfig
from benchmark.world.data import caption


@dataclass(frozen=True)
class WorldPrompt:
    id: str
    text: str
    content: str
    named: dict[str, str] = field(default_factory=dict)


def world_prompts(config: WorldConfig) -> list[WorldPrompt]:
    prompts = [WorldPrompt(d, caption(i), d) for i, d in enumerate(DIGITS)]
    for attr, labels in config.attributes.items():
        # Most biased first: largest share of any class; ties broken by digit order.
        strength = sorted(DIGITS, key=lambda d: (-config.shares[d][attr].max(), DIGITS.index(d)))
        for d in strength[:2]:
            minority = labels[int(np.argmin(config.shares[d][attr]))]
            k = labels.index(minority)
            if attr == "color":
                prompts.append(WorldPrompt(f"{minority}-{d}", caption(DIGITS.index(d), color=k), d, {attr: minority}))
            else:
                prompts.append(WorldPrompt(f"{d}-{minority}", caption(DIGITS.index(d), shade=k), d, {attr: minority}))
    return prompts


def world_truth(config: WorldConfig) -> dict[str, dict[str, np.ndarray]]:
    """{prompt id: {attribute: true class shares}} for every world prompt."""
    truth = {}
    for p in world_prompts(config):
        shares = {a: config.shares[p.content][a].copy() for a in config.attributes}
        for attr, value in p.named.items():
            onehot = np.zeros(len(config.attributes[attr]))
            onehot[config.attributes[attr].index(value)] = 1.0
            shares[attr] = onehot
        truth[p.id] = shares
    return truth
