"""Attribute classifiers of the controlled-bias world (``benchmark.world``).

* :class:`WorldClassifier`: a small CNN with one softmax head per attribute (``color``, ``shade``)
  and one for the content (``digit``). Trained on balanced renders of the training glyph scans;
  its accuracy and confusion matrices are measured on renders of held-out scans.
* :class:`WeakWorldClassifier`: multinomial logistic regression that only sees the mean colour of
  one small window of the image, so it is deliberately wrong on about 15 % of images. It exists
  to exercise classifier-error correction (CLEAM, Teo et al. 2023) against a known truth.

Both load shipped ``.safetensors`` weights from ``benchmark/world/weights`` by default; the
confusion matrix C[i, j] = P(predicted j | true i) is stored next to the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from benchmark.errors import DataError, ModelLoadError
from classifiers.base import Classifier
from classifiers.calibration import STORED, WEIGHTS_DIR, read_meta, stored_calibration

ATTRIBUTES = {
    "color": ["red", "blue"],
    "shade": ["light", "mid", "dark"],
    "digit": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
}
# The world CLIP's zero-shot texts (benchmark/world/clip.py trains on captions of this form) and files.
CLIP_TEMPLATES: dict[str, dict[str, str]] = {
    "color": {c: f"a {c} glyph" for c in ATTRIBUTES["color"]},
    "shade": {s: f"a glyph on a {s} background" for s in ATTRIBUTES["shade"]},
    "digit": {d: f"a photo of a {d}" for d in ATTRIBUTES["digit"]},
}
CLIP_MODEL_CONFIG = Path(__file__).resolve().parent.parent / "benchmark" / "world" / "world-clip.json"
CLIP_WEIGHTS = "clip.safetensors"


def _as_input(images: np.ndarray) -> torch.Tensor:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"world classifier needs uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (8, 8):
        x = F.interpolate(x, size=(8, 8), mode="area")
    return x


class WorldNet(nn.Module):
    """Two 3x3 conv layers at 8x8, one at 4x4, then a linear head per attribute."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 128), nn.GELU(),
        )
        self.heads = nn.ModuleDict({a: nn.Linear(128, len(c)) for a, c in ATTRIBUTES.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {a: head(h) for a, head in self.heads.items()}


class WeakNet(nn.Module):
    """Logistic regression on the mean RGB of one small window per attribute.

    ``windows[attribute] = (top, left, size)``; the build picks, per attribute, the window whose
    validation accuracy is closest to 85 %.
    """

    def __init__(self, windows: dict[str, tuple[int, int, int]]) -> None:
        super().__init__()
        self.windows = {a: tuple(int(v) for v in w) for a, w in windows.items()}
        self.heads = nn.ModuleDict({a: nn.Linear(3, len(ATTRIBUTES[a])) for a in windows})

    @staticmethod
    def features(x: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
        top, left, size = window
        return x[:, :, top: top + size, left: left + size].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {a: head(self.features(x, self.windows[a])) for a, head in self.heads.items()}


def fit(net: nn.Module, images: np.ndarray, labels: dict[str, np.ndarray], epochs: int, seed: int = 0,
        lr: float = 3e-3, batch_size: int = 256, progress: bool = False) -> nn.Module:
    """Cross-entropy training, summed over the net's heads; seeded."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    x = _as_input(images)
    y = {a: torch.as_tensor(labels[a]).long() for a in net.heads}
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    bar = tqdm(range(epochs), desc=f"fit {type(net).__name__}", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i: i + batch_size]
            out = net(x[idx])
            loss = sum(F.cross_entropy(out[a], y[a][idx]) for a in out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def predict_probs(net: nn.Module, images: np.ndarray, batch_size: int = 2048) -> dict[str, np.ndarray]:
    x = _as_input(images)
    outs: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), batch_size):
        for a, logits in net(x[i: i + batch_size]).items():
            outs.setdefault(a, []).append(torch.softmax(logits.double(), dim=1).numpy())
    k = {a: len(ATTRIBUTES[a]) for a in net.heads}
    return {a: np.concatenate(v) if v else np.zeros((0, k[a])) for a, v in outs.items()}


def confusion_matrix(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """C[i, j] = P(predicted j | true i), rows normalised (a zero row stays zero)."""
    c = np.zeros((k, k))
    np.add.at(c, (np.asarray(true), np.asarray(pred)), 1)
    rows = c.sum(axis=1, keepdims=True)
    return np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)


def save_net(net: nn.Module, path: Path, meta: dict) -> None:
    """Weights as safetensors; confusion matrices and settings in the safetensors metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"meta": json.dumps(meta)})


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    meta = read_meta(path)
    try:
        return load_file(str(path)), meta
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ModelLoadError(f"{path}: corrupt world classifier weights ({exc})") from None


class _NetClassifier(Classifier):
    filename = ""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        path = Path(weights) if weights is not None else WEIGHTS_DIR / self.filename
        state, meta = _load(path)
        self.path = path
        self.net = self._build(meta)
        try:
            self.net.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(f"{path}: weights do not match the {type(self).__name__} network ({exc})") from None
        self.net.eval()
        self.meta = meta
        self.attributes = {a: list(ATTRIBUTES[a]) for a in self.net.heads}
        stored = stored_calibration(path, meta)
        self.confusion = stored.confusion
        self.soft_confusion = stored.soft_confusion
        self.accuracy_by_content = stored.accuracy_by_content
        self.confusion_by_content = stored.confusion_by_content
        self.soft_confusion_by_content = stored.soft_confusion_by_content
        self.confusion_n = stored.confusion_n
        self.confusion_n_by_content = stored.confusion_n_by_content
        self.confusion_source = meta.get("confusion_source", "")
        self.accuracy = meta.get("accuracy", {})
        self.fingerprint = stored.fingerprint

    def _build(self, meta: dict) -> nn.Module:
        raise NotImplementedError

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return predict_probs(self.net, images)


class WorldClassifier(_NetClassifier):
    """The world's reference attribute classifier (>= 98 % held-out accuracy per attribute)."""

    name = "world"
    filename = STORED["world"]

    def _build(self, meta: dict) -> nn.Module:
        return WorldNet(width=int(meta.get("width", 32)))


class WeakWorldClassifier(_NetClassifier):
    """A deliberately weak world classifier (about 85 % held-out accuracy) for error correction."""

    name = "world-weak"
    filename = STORED["world-weak"]

    def _build(self, meta: dict) -> nn.Module:
        if "windows" not in meta:
            raise ModelLoadError(f"{self.path}: no 'windows' in the weights metadata")
        return WeakNet(meta["windows"])
