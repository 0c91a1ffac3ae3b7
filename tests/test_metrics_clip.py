"""CLIP-T and CLIP-I with a hand-checkable fake embedder and a tiny random open_clip model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmark.errors import DataError
from benchmark.metrics import clip_i, clip_i_from_embeddings, clip_t, clip_t_from_embeddings


class ColourEmbedder:
    """Image → its mean RGB direction; text → a fixed direction per word. Cosines are hand-computable."""

    fingerprint = "colour-embedder"
    TEXTS = {
        "red": [1.0, 0.0, 0.0],
        "blue": [0.0, 0.0, 1.0],
        "not red": [-1.0, 0.0, 0.0],
        "reddish": [1.0, math.sqrt(3.0), 0.0],  # 60° from red: cos = 0.5
    }

    def __init__(self) -> None:
        self.text_calls: list[list[str]] = []

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        v = images.astype(np.float64).mean(axis=(1, 2))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        self.text_calls.append(list(texts))
        v = np.array([self.TEXTS[t] for t in texts])
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _solid(rgb: tuple[int, int, int], n: int = 1) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (n, 8, 8, 3)).copy()


def test_clip_t_hand_values():
    emb = ColourEmbedder()
    imgs = np.concatenate([_solid((255, 0, 0))] * 4)
    scores = clip_t(emb, imgs, ["red", "blue", "not red", "reddish"])
    np.testing.assert_allclose(scores, [100.0, 0.0, 0.0, 50.0], atol=1e-4)
    # One prompt for all images is encoded once.
    emb.text_calls.clear()
    np.testing.assert_allclose(clip_t(emb, imgs, "reddish"), 50.0, atol=1e-4)
    assert emb.text_calls == [["reddish"]]


def test_clip_i_hand_values():
    emb = ColourEmbedder()
    red, green = _solid((200, 0, 0)), _solid((0, 90, 0))
    a = np.concatenate([red, red])
    b = np.concatenate([_solid((50, 0, 0)), green])
    np.testing.assert_allclose(clip_i(emb, a, b), [1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(clip_i_from_embeddings([[1.0, 0.0]], [[-2.0, 0.0]]), [0.0])


def test_from_embeddings_normalises_and_checks():
    np.testing.assert_allclose(clip_t_from_embeddings([[3.0, 4.0]], [[4.0, 3.0]]), [100 * 24 / 25])
    with pytest.raises(DataError, match="pair up"):
        clip_t_from_embeddings(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(DataError, match="NaN"):
        clip_i_from_embeddings([[np.nan, 1.0]], [[1.0, 0.0]])
    with pytest.raises(DataError, match="zero norm"):
        clip_i_from_embeddings([[0.0, 0.0]], [[1.0, 0.0]])
    with pytest.raises(DataError, match="texts"):
        clip_t(ColourEmbedder(), _solid((255, 0, 0), 2), ["red"])
    with pytest.raises(DataError, match="uint8"):
        clip_i(ColourEmbedder(), np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))


class OpenClipEmbedder:
    """Minimal open_clip adapter for the test: uint8 → model preprocessing → unit embeddings."""

    def __init__(self, model, tokenizer, size: int) -> None:
        import torch

        self.model, self.tokenizer, self.size, self.torch = model.eval(), tokenizer, size, torch
        self.fingerprint = "tiny-open-clip"

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        with torch.no_grad():
            return self.model.encode_image(x, normalize=True).numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.encode_text(self.tokenizer(texts), normalize=True).numpy()


@pytest.mark.slow  # importing open_clip alone takes 10-30 s on the shared 2-core machine
def test_tiny_random_open_clip_model(tmp_path):
    import open_clip
    import torch

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "metrics-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "metrics-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("metrics-tiny-clip", pretrained=None)
    emb = OpenClipEmbedder(model, open_clip.get_tokenizer("metrics-tiny-clip"), 32)
    imgs = np.random.default_rng(0).integers(0, 256, size=(3, 40, 40, 3), dtype=np.uint8)
    texts = ["a photo of a doctor", "a photo of a nurse", "a photo of a doctor"]
    scores = clip_t(emb, imgs, texts, batch_size=2)
    img_e, txt_e = emb.encode_images(imgs), emb.encode_texts(texts)
    expected = 100 * np.maximum((img_e * txt_e).sum(axis=1), 0)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)
    assert scores.shape == (3,) and (scores >= 0).all() and (scores <= 100).all()
    same = clip_i(emb, imgs, imgs.copy())
    np.testing.assert_allclose(same, 1.0, atol=1e-5)
    other = clip_i(emb, imgs, imgs[::-1].copy())
    assert other[0] < 1.0 - 1e-4 and (other >= 0).all()
