"""Image/text embedders (CLIP space) used by CLIP metrics, zero-shot classifiers and methods."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Any CLIP-like model: L2-normalised embeddings of images and texts in one space."""

    fingerprint: str

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) → float32 (N, D), unit norm."""
        ...

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """list of N strings → float32 (N, D), unit norm."""
        ...


@contextmanager
def _quiet_random_init(active: bool) -> Iterator[None]:
    """Silence open_clip's "initialized randomly" warning when a checkpoint is loaded right after."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    if active:
        root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


class OpenClipEmbedder:
    """An :class:`Embedder` over any open_clip model.

    model:        an open_clip architecture name (``"ViT-B-32"``, or the stem of ``model_config``).
    pretrained:   an open_clip pretrained tag (downloads; fails offline) or None.
    checkpoint:   a local ``.safetensors`` checkpoint of the whole model, or None.
    model_config: a custom model-config JSON, registered with ``open_clip.add_model_config``;
                  its file stem is the architecture name (the default for ``model``).

    Images are preprocessed as open_clip does (resize the short side to the tower's size with
    bicubic antialiasing, centre crop, normalise with the model's mean and std), in torch.
    ``fingerprint`` is the sha256 of the checkpoint file, else of the parameters.
    """

    def __init__(
        self,
        model: str | None = None,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        model_config: str | None = None,
        device: str = "cpu",
        batch_size: int = 256,
    ) -> None:
        from pathlib import Path

        from benchmark.errors import ConfigError, ModelLoadError

        if checkpoint is not None and Path(checkpoint).suffix != ".safetensors":
            # open_clip would fall back to torch.load for other suffixes: only tensors are accepted.
            raise ModelLoadError(f"{checkpoint}: open_clip checkpoints are loaded only from .safetensors files")

        import open_clip

        from benchmark.hashing import hash_file, hash_module

        if model_config is not None:
            cfg_path = Path(model_config)
            if not cfg_path.is_file():
                raise ConfigError(f"{cfg_path}: open_clip model config not found")
            open_clip.add_model_config(cfg_path)
            model = model or cfg_path.stem
        if model is None:
            raise ConfigError("OpenClipEmbedder: give a model name or a model_config JSON")
        if model not in open_clip.list_models() and not model.startswith(("hf-hub:", "local-dir:")):
            raise ConfigError(f"unknown open_clip model {model!r} (register a config JSON with model_config=...)")
        try:
            with _quiet_random_init(checkpoint is not None):
                self.model = open_clip.create_model(model, pretrained=pretrained, device=device)
        except Exception as exc:  # open_clip raises RuntimeError/OSError for unreachable weights
            raise ModelLoadError(f"open_clip {model!r} pretrained={pretrained!r}: {str(exc).splitlines()[0]}") from None
        if checkpoint is not None:
            ckpt = Path(checkpoint)
            if not ckpt.is_file():
                raise ModelLoadError(f"{ckpt}: open_clip checkpoint not found")
            try:
                open_clip.load_checkpoint(self.model, str(ckpt), device=device)
            except Exception as exc:  # corrupt file or mismatched keys
                raise ModelLoadError(f"{ckpt}: cannot load open_clip checkpoint ({str(exc).splitlines()[0]})") from None
            self.fingerprint = hash_file(ckpt)
        else:
            self.fingerprint = hash_module(self.model)
        self.model.eval().float()
        self.name = model
        self.device = device
        self.batch_size = batch_size
        self.tokenizer = open_clip.get_tokenizer(model)
        pre = open_clip.get_model_preprocess_cfg(self.model)
        size = pre.get("size", 224)
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = np.asarray(pre.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=np.float32)
        self.std = np.asarray(pre.get("std", open_clip.OPENAI_DATASET_STD), dtype=np.float32)

    def preprocess(self, images: np.ndarray):
        """uint8 (N, H, W, 3) → normalised float tensor (N, 3, h, w) at the tower's size."""
        import torch
        import torch.nn.functional as F

        from benchmark.errors import DataError

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DataError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        th, tw = self.image_size
        if x.shape[-2:] != (th, tw):
            scale = max(th / x.shape[-2], tw / x.shape[-1])
            size = (max(th, round(x.shape[-2] * scale)), max(tw, round(x.shape[-1] * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
            top, left = (size[0] - th) // 2, (size[1] - tw) // 2
            x = x[:, :, top: top + th, left: left + tw]
        mean = torch.from_numpy(self.mean).view(1, 3, 1, 1)
        std = torch.from_numpy(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = self.preprocess(images[i: i + self.batch_size]).to(self.device)
                out.append(torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1).cpu().numpy())
        dim = int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else 0
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                ids = self.tokenizer(list(texts[i: i + self.batch_size])).to(self.device)
                out.append(torch.nn.functional.normalize(self.model.encode_text(ids).float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


class LazyOpenClipEmbedder(OpenClipEmbedder):
    """An :class:`OpenClipEmbedder` of a local ``.safetensors`` checkpoint that imports open_clip and
    loads the model only when first used. Its ``fingerprint`` (the checkpoint file's sha256) is known
    at once, so a re-score whose embeddings are all cached (:class:`benchmark.cache.CachedImageEncoder`)
    never loads it. Arguments as for :class:`OpenClipEmbedder`; a bad checkpoint path fails at once."""

    def __init__(self, checkpoint: str, model_config: str | None = None, model: str | None = None,
                 device: str = "cpu", batch_size: int = 256) -> None:
        from pathlib import Path

        from benchmark.errors import ModelLoadError
        from benchmark.hashing import hash_file

        ckpt = Path(checkpoint)
        if ckpt.suffix != ".safetensors":
            raise ModelLoadError(f"{checkpoint}: open_clip checkpoints are loaded only from .safetensors files")
        if not ckpt.is_file():
            raise ModelLoadError(f"{ckpt}: open_clip checkpoint not found")
        self.__dict__["_args"] = {"model": model, "checkpoint": str(ckpt), "model_config": model_config,
                                  "device": device, "batch_size": batch_size}
        self.__dict__["fingerprint"] = hash_file(ckpt)
        self.__dict__["device"] = device
        self.__dict__["batch_size"] = batch_size
        self.__dict__["name"] = model or (Path(model_config).stem if model_config else None)

    @property
    def loaded(self) -> bool:
        return "model" in self.__dict__

    def __getattr__(self, name: str):
        # only attributes the loaded model sets (model, tokenizer, name, image_size, mean, std) get here
        if name.startswith("__") or "_args" not in self.__dict__ or self.loaded:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        fingerprint = self.__dict__["fingerprint"]
        OpenClipEmbedder.__init__(self, **self.__dict__["_args"])
        if self.fingerprint != fingerprint:
            raise RuntimeError(f"{self._args['checkpoint']}: changed while in use")
        return getattr(self, name)

