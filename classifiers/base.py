"""The attribute-classifier interface.

``predict`` returns per-image class probabilities for every attribute the classifier knows.
``detect`` marks images that contain a subject (a face); images without one are counted and
reported by the runner, never silently dropped. ``confusion`` holds, per attribute, the matrix
C[i, j] = P(predicted j | true i) measured on labelled data, which corrects hard (argmax) shares;
``soft_confusion`` the matrix C[i, j] = E[q_j | true i] of mean probabilities, which corrects soft
shares (the ``*-cleam`` variants exist only where the matching matrix does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

CLEAM_SPREAD_LIMIT = 0.10  # largest accuracy spread across contents under which one confusion matrix is trusted


class Classifier(ABC):
    name: str = "classifier"

    def __init__(self) -> None:
        self.attributes: dict[str, list[str]] = {}
        self.confusion: dict[str, np.ndarray] = {}
        self.soft_confusion: dict[str, np.ndarray] = {}
        # held-out accuracy per content class (attribute -> content -> accuracy), where measured: CLEAM
        # assumes the errors do not depend on the content, and this is where that can be seen to fail
        self.accuracy_by_content: dict[str, dict[str, float]] = {}
        # confusion matrices measured per content class (attribute -> content -> matrix): CLEAM for a
        # prompt that names one content uses that content's matrix (benchmark.metrics.cleam.content_of)
        self.confusion_by_content: dict[str, dict[str, np.ndarray]] = {}
        self.soft_confusion_by_content: dict[str, dict[str, np.ndarray]] = {}
        # labelled images per true class behind each row of the matrices above (attribute -> counts, and
        # attribute -> content -> counts): with them the CLEAM intervals include the matrices' own
        # sampling error; without them (hand-given or published matrices) the matrices are taken as exact
        self.confusion_n: dict[str, np.ndarray] = {}
        self.confusion_n_by_content: dict[str, dict[str, np.ndarray]] = {}
        self.confusion_source: str = ""
        self.fingerprint: str = ""

    def cleam_assumption(self) -> dict | None:
        """Whether CLEAM's assumption holds for this classifier as far as it was measured: its held-out
        accuracy varies across content classes by at most ``CLEAM_SPREAD_LIMIT`` on every attribute.
        None when no per-content accuracy was measured."""
        spread = {a: round(max(v.values()) - min(v.values()), 5) for a, v in self.accuracy_by_content.items() if v}
        if not spread:
            return None
        return {"holds": all(s <= CLEAM_SPREAD_LIMIT for s in spread.values()), "accuracy_spread": spread,
                "limit": CLEAM_SPREAD_LIMIT}

    @abstractmethod
    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (N, H, W, 3) → {attribute: float probabilities (N, K)}, rows summing to 1."""

    def detect(self, images: np.ndarray) -> np.ndarray:
        """Boolean (N,): True where the image has a subject to classify. Default: all."""
        return np.ones(len(images), dtype=bool)
