"""FID features of the world: the world CLIP image tower's output (before normalisation).

The Fréchet distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge
to a Local Nash Equilibrium") needs a feature extractor; Inception-v3 cannot be downloaded here
and knows nothing of 8x8 glyphs, so the world uses its own CLIP image tower (64-d). The mean and
covariance of the balanced reference set are cached next to the weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.embedding import LazyOpenClipEmbedder, OpenClipEmbedder
from benchmark.errors import ModelLoadError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CLIP_FILE = "clip.safetensors"
FID_FILE = "fid_reference.safetensors"


def shared_weights(weights_dir: str | Path | None, name: str) -> Path:
    """``weights_dir/name``, or the default world's file when the variant ships none.

    World variants differ only in their bias: the images, attributes and captions are the same, so
    a variant may reuse the default world's CLIP and attribute classifiers instead of shipping copies.
    """
    path = Path(weights_dir or WEIGHTS_DIR) / name
    return path if path.exists() else WEIGHTS_DIR / name


def world_embedder(weights_dir: str | Path | None = None, lazy: bool = False) -> OpenClipEmbedder:
    """The world CLIP as an :class:`OpenClipEmbedder` (shipped weights by default); ``lazy``: loaded
    (open_clip imported) on first use (:class:`~benchmark.embedding.LazyOpenClipEmbedder`)."""
    from benchmark.world.clip import CLIP_CONFIG

    if lazy:
        return LazyOpenClipEmbedder(model_config=str(CLIP_CONFIG), checkpoint=str(shared_weights(weights_dir, CLIP_FILE)))
    return OpenClipEmbedder(model_config=str(CLIP_CONFIG), checkpoint=str(shared_weights(weights_dir, CLIP_FILE)))


class WorldFeatures:
    """Callable: uint8 (N, H, W, 3) images → float64 (N, 64) features for FID."""

    def __init__(self, embedder: OpenClipEmbedder) -> None:
        self.embedder = embedder
        self.fingerprint = embedder.fingerprint

    @property
    def dim(self) -> int:
        return int(self.embedder.model.visual.output_dim)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(images), 1024):
                x = self.embedder.preprocess(images[i: i + 1024])
                out.append(self.embedder.model.encode_image(x).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance, as clean-fid and pytorch-fid compute them."""
    return features.mean(axis=0), np.cov(features, rowvar=False)


def save_reference_stats(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    from safetensors.torch import save_file

    save_file({"mu": torch.from_numpy(np.ascontiguousarray(mu)), "sigma": torch.from_numpy(np.ascontiguousarray(sigma))},
              str(path))


def load_reference_stats(weights_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the balanced reference set in world-CLIP feature space."""
    from safetensors.torch import load_file

    path = Path(weights_dir or WEIGHTS_DIR) / FID_FILE
    if not path.exists():
        raise ModelLoadError(f"{path}: FID reference statistics not found; run `debias-bench world build`")
    try:
        t = load_file(str(path))
        return t["mu"].numpy(), t["sigma"].numpy()
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ModelLoadError(f"{path}: corrupt FID reference statistics ({exc})") from None
