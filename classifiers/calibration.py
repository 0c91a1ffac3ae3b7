"""A world classifier's calibration, read from its shipped files without building its network.

The weights file's metadata holds the argmax confusion matrices, ``classifier_measurements.json``
beside it what the build measured on held-out renders (soft and per-content matrices, the images
behind each row), and the file's sha256 is the classifier's fingerprint. Reading these imports
neither torch nor the network's code, so the submission check can substitute the registered
matrices in a fraction of a second (:data:`STORED` names the classifiers this covers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.errors import ModelLoadError
from benchmark.hashing import hash_file

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "benchmark" / "world" / "weights"
MEASUREMENTS_FILE = "classifier_measurements.json"
# registered classifier name -> its weights file in WEIGHTS_DIR
STORED = {"world": "classifier.safetensors", "world-weak": "classifier_weak.safetensors"}


@dataclass
class StoredCalibration:
    fingerprint: str
    confusion: dict[str, np.ndarray] = field(default_factory=dict)
    soft_confusion: dict[str, np.ndarray] = field(default_factory=dict)
    accuracy_by_content: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion_by_content: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    soft_confusion_by_content: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    confusion_n: dict[str, np.ndarray] = field(default_factory=dict)
    confusion_n_by_content: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def read_meta(path: Path) -> dict:
    """The ``meta`` JSON stored in a world classifier's safetensors header."""
    if not path.exists():
        raise ModelLoadError(f"{path}: world classifier weights not found; run `debias-bench world build`")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return json.loads((f.metadata() or {}).get("meta", "{}"))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ModelLoadError(f"{path}: corrupt world classifier weights ({exc})") from None


def read_measurements(weights: Path) -> dict:
    """What the build measured for ``weights`` on held-out renders, kept beside them (so the weights
    file and the classifier's fingerprint stay as they were): ``soft_confusion`` {attribute: matrix},
    ``accuracy_by_content`` {attribute: {digit: accuracy}}, the per-digit matrices, and the held-out
    images per true class behind each matrix row, ``confusion_n`` {attribute: counts} (pooled) and
    ``confusion_n_by_content`` {attribute: {digit: counts}}; empty when nothing was recorded."""
    path = weights.parent / MEASUREMENTS_FILE
    if not path.exists():
        return {}
    try:
        recorded = json.loads(path.read_text()).get(weights.name, {})
        by_content = {kind: {a: {str(g): np.asarray(m, dtype=float) for g, m in by.items()}
                             for a, by in recorded.get(kind, {}).items()}
                      for kind in ("confusion_by_content", "soft_confusion_by_content")}
        return {"soft_confusion": {a: np.asarray(m, dtype=float) for a, m in recorded.get("soft_confusion", {}).items()},
                "accuracy_by_content": {a: {str(g): float(v) for g, v in by.items()}
                                        for a, by in recorded.get("accuracy_by_content", {}).items()}, **by_content,
                "confusion_n": {a: np.asarray(n, dtype=np.int64) for a, n in recorded.get("confusion_n", {}).items()},
                "confusion_n_by_content": {a: {str(g): np.asarray(n, dtype=np.int64) for g, n in by.items()}
                                           for a, by in recorded.get("counts_by_content", {}).items()}}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ModelLoadError(f"{path}: unreadable classifier measurements ({exc})") from None


def stored_calibration(path: Path, meta: dict | None = None) -> StoredCalibration:
    """The calibration of the classifier whose weights are ``path`` (``meta``: its header, if read)."""
    meta = read_meta(path) if meta is None else meta
    measured = read_measurements(path)
    return StoredCalibration(
        fingerprint=hash_file(path),
        confusion={a: np.asarray(m, dtype=float) for a, m in meta.get("confusion", {}).items()},
        **{k: measured.get(k, {}) for k in ("soft_confusion", "accuracy_by_content", "confusion_by_content",
                                             "soft_confusion_by_content", "confusion_n", "confusion_n_by_content")},
    )


def registered_calibration(name: str) -> StoredCalibration | None:
    """The shipped calibration of registered classifier ``name`` (None when it has no stored one)."""
    return stored_calibration(WEIGHTS_DIR / STORED[name]) if name in STORED else None
