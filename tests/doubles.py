"""Test doubles shared by several test modules."""

from __future__ import annotations

import numpy as np
import torch

from classifiers.base import Classifier


class PixelEmbedder:
    """A fixed random projection of 4x4-pooled pixels: deterministic, unit-norm, CLIP-shaped."""

    fingerprint = "test-pixel-embedder"

    def __init__(self, dim: int = 16) -> None:
        self.w = torch.randn(48, dim, generator=torch.Generator().manual_seed(0))

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        x = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.nn.functional.normalize((x - 0.5) @ self.w, dim=1).numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


def save_stand_in_inception(path) -> torch.nn.Module:
    """A TorchScript file with clean-fid's Inception layout (``.layers`` → (B, 2048, 1, 1)); it checks
    that its inputs were resized to 299 px, as clean-fid does, and is seeded."""

    class Layers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(3, 2048)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.shape[2] == 299
            return self.proj(x.mean(dim=(2, 3))).reshape(x.shape[0], 2048, 1, 1)

    class Base(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = Layers()

        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return self.layers(x)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = Base()
    torch.jit.script(base).save(str(path))
    return base


def world_colour_rows(world, generators: dict, n: int = 64) -> dict[str, tuple[float, float]]:
    """For each named generator ``(prompts, seeds) -> images``: (mean colour soft FD over the world
    prompts that leave colour open, FID vs the world's reference), n images per prompt. The world
    methods' slow target tests compare a method's row with the baseline's."""
    from benchmark.metrics.fid import frechet_distance
    from benchmark.seeding import image_seeds
    from classifiers.world import WorldClassifier

    clf = WorldClassifier()
    ref = world.features(world.reference.images)
    rows = {}
    for label, generate in generators.items():
        fds, images = [], []
        for prompt in world_open_prompts(world):
            imgs = generate([prompt] * n, image_seeds(0, prompt, n))
            images.append(imgs)
            fds.append(float(np.linalg.norm(clf.predict(imgs)["color"].mean(0) - 0.5)))
        rows[label] = (float(np.mean(fds)), frechet_distance(world.features(np.concatenate(images)), ref))
    return rows


def world_open_prompts(world) -> list[str]:
    """The world prompts that leave colour open: what the runner prepares methods on."""
    return [p.text for p in world.prompts if "color" not in p.named]


class MeanColourClassifier(Classifier):
    """A fixed rule for smoke runs on untrained models: P(warm) = sigmoid((mean R - mean B) / 4 - 1)."""

    name = "mean-colour"

    def __init__(self) -> None:
        super().__init__()
        self.attributes = {"tone": ["warm", "cool"]}
        self.fingerprint = "mean-colour-v1"

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        mean = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1)
        warm = 1.0 / (1.0 + np.exp(-((mean[:, 0] - mean[:, 2]) / 4.0 - 1.0)))
        return {"tone": np.stack([warm, 1.0 - warm], axis=1)}
