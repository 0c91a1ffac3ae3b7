"""Zero-shot attribute classification with any open_clip model (Radford et al. 2021, Sec. 3.1.4).

For each attribute, every class has a text; an image's class probabilities are
``softmax(100 * cos(image, text_k))`` over that attribute's class texts (100 is CLIP's logit
scale). With no arguments it uses the world CLIP and the world's class texts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.embedding import OpenClipEmbedder
from benchmark.errors import ConfigError
from benchmark.hashing import hash_value
from classifiers.base import Classifier

LOGIT_SCALE = 100.0


class ClipZeroShot(Classifier):
    """``templates``: {attribute: {class label: text}}; class order is the dict order.

    model/pretrained/checkpoint/model_config are passed to :class:`OpenClipEmbedder`; an
    ``embedder`` can be given instead. ``confusion`` stays empty unless measured by the caller.
    """

    name = "clip"

    def __init__(
        self,
        model: str | None = None,
        pretrained: str | None = None,
        checkpoint: str | Path | None = None,
        templates: dict[str, dict[str, str]] | None = None,
        model_config: str | Path | None = None,
        embedder: OpenClipEmbedder | None = None,
    ) -> None:
        super().__init__()
        if embedder is None:
            if model is None and checkpoint is None and model_config is None:  # the world's CLIP
                from classifiers.world import CLIP_MODEL_CONFIG, CLIP_TEMPLATES, CLIP_WEIGHTS, WEIGHTS_DIR

                embedder = OpenClipEmbedder(model_config=str(CLIP_MODEL_CONFIG), checkpoint=str(WEIGHTS_DIR / CLIP_WEIGHTS))
                templates = templates or CLIP_TEMPLATES
            else:
                embedder = OpenClipEmbedder(model=model, pretrained=pretrained,
                                            checkpoint=str(checkpoint) if checkpoint else None,
                                            model_config=str(model_config) if model_config else None)
        if not templates:
            raise ConfigError("ClipZeroShot: templates must map each attribute to {class: text}")
        for attr, texts in templates.items():
            if not isinstance(texts, dict) or len(texts) < 2:
                raise ConfigError(f"ClipZeroShot: templates.{attr} must map at least two classes to texts")
        self.embedder = embedder
        self.templates = {a: dict(t) for a, t in templates.items()}
        self.attributes = {a: list(t) for a, t in self.templates.items()}
        self._text = {a: embedder.encode_texts(list(t.values())) for a, t in self.templates.items()}
        self.confusion_source = ""
        self.fingerprint = hash_value({"embedder": embedder.fingerprint, "templates": self.templates})

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        emb = self.embedder.encode_images(images).astype(np.float64)
        out = {}
        for attr, text in self._text.items():
            logits = LOGIT_SCALE * emb @ text.astype(np.float64).T
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            out[attr] = p / p.sum(axis=1, keepdims=True)
        return out

