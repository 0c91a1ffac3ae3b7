"""`debias-bench method difflens features`: the bias features DiffLens found, with their scores, and
a grid of what boosting each one alone does to the images (a diagnostic, not a metric)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmark.components import Components
from benchmark.errors import ConfigError
from methods.base import MethodData
from methods.difflens import DiffLens, DiffLensParams, FeatureEdit


def image_grid(rows: list[np.ndarray], scale: int) -> np.ndarray:
    """Stack rows of images (each (n, H, W, 3)) into one uint8 picture, 1-pixel white gutters."""
    rows = [np.repeat(np.repeat(r, scale, axis=1), scale, axis=2) for r in rows]
    n, hh, ww = rows[0].shape[:3]
    out = np.full((len(rows) * (hh + 1) + 1, n * (ww + 1) + 1, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            out[1 + i * (hh + 1): 1 + i * (hh + 1) + hh, 1 + j * (ww + 1): 1 + j * (ww + 1) + ww] = img
    return out


def feature_report(method: DiffLens, prompt: str, top: int, seeds: Sequence[int], boost: float,
                   grid_path: Path | None) -> str:
    """A table of the top ``top`` features per class and, if ``grid_path``, a PNG: one row per feature
    (the first row unedited), one column per seed; each row adds ``boost`` x the feature's mean
    active value to that one latent at every edited step."""
    assert method.rankings is not None and method.scores is not None and method.mean_active is not None
    lines = [f"attribute {method.attribute!r}: top {top} features per class (integrated-gradients score)"]
    rows = [method.generate_with([prompt] * len(seeds), seeds, FeatureEdit([], [], True), [[]] * len(seeds))]
    labels = ["unedited"]
    for c, cls in enumerate(method.classes):
        for rank in range(min(top, method.rankings.shape[1])):
            f = int(method.rankings[c, rank])
            lines.append(f"  {cls:>12s}  #{rank + 1:<3d} latent {f:5d}  score {float(method.scores[c, f]):+.4g}"
                         f"  mean active {float(method.mean_active[f]):.3g}")
            if grid_path is not None:
                edit = FeatureEdit([torch.tensor([f])], [boost * method.mean_active[[f]]], True)
                rows.append(method.generate_with([prompt] * len(seeds), seeds, edit, [[0]] * len(seeds)))
                labels.append(f"{cls} #{rank + 1} (latent {f})")
    if grid_path is not None:
        from PIL import Image

        Image.fromarray(image_grid(rows, scale=max(1, 48 // rows[0].shape[1]))).save(grid_path)
        lines.append(f"grid {grid_path}: rows = " + "; ".join(labels) + f"; columns = seeds {list(seeds)}")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    """``debias-bench method difflens features ...``: print the bias features and save a boost grid."""
    parser = argparse.ArgumentParser(prog="debias-bench method difflens", description=cli.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    feat = sub.add_parser("features", help="top features per class with scores, and a grid of boosting each")
    feat.add_argument("--workdir", type=Path, default=Path("artefacts/difflens"), help="artefact directory (cached)")
    feat.add_argument("--profile", choices=["world", "tiny"], default="world")
    feat.add_argument("--attribute", default=None, help="classifier attribute (default: the classifier's first)")
    feat.add_argument("--prompt", default=None, help="prompt for the grid (default: the first training prompt)")
    feat.add_argument("--top", type=int, default=3)
    feat.add_argument("--seeds", type=int, default=6, help="grid columns")
    feat.add_argument("--boost", type=float, default=6.0, help="offset in units of the feature's mean active value")
    feat.add_argument("--grid", type=Path, default=Path("difflens-features.png"))
    feat.add_argument("--samples-per-prompt", type=int, default=None)
    feat.add_argument("--edit-stop-fraction", type=float, default=None,
                      help=f"edit steps before this fraction of the schedule (default {DiffLensParams.edit_stop_fraction})")
    args = parser.parse_args(argv)

    base, data = _profile(args.profile)
    params = DiffLensParams(attribute=args.attribute)
    if args.samples_per_prompt is not None:
        params.samples_per_prompt = args.samples_per_prompt
    if args.edit_stop_fraction is not None:
        params.edit_stop_fraction = args.edit_stop_fraction
    method = DiffLens(params)
    method.prepare(base, data, args.workdir)
    prompt = args.prompt or data.prompts[0]
    print(feature_report(method, prompt, args.top, list(range(args.seeds)), args.boost, args.grid))
    return 0


def _profile(name: str) -> tuple[Components, MethodData]:
    if name == "tiny":
        from benchmark.tiny import tiny_sd_components
        from classifiers.palette import PaletteClassifier

        return tiny_sd_components(), MethodData(prompts=["a photo of a doctor", "a photo of a nurse"],
                                                classifier=PaletteClassifier())
    try:
        from benchmark.world import load_world
        from classifiers.world import WorldClassifier
    except ImportError as exc:
        raise ConfigError(f"difflens: the world profile is not available ({exc})") from None
    world = load_world()
    data = world.method_data
    if data.classifier is None:
        data.classifier = WorldClassifier()
    return world.components, data
