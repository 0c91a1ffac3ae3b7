"""`debias-bench method selfdebias ...`: what SelfDebias's preparation discovered (a diagnostic, not a
metric). ``modes MANIFEST`` prints the modes found per prompt and branch; ``purity`` draws baseline
images on the world and shows, per discovered mode, the world classifier's mean class probabilities:
whether the modes follow the attributes the method is meant to balance."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from functools import partial
from pathlib import Path

import torch

from benchmark.errors import ConfigError
from benchmark.sampling import sample
from benchmark.seeding import image_seeds
from methods.selfdebias import SelfDebias, keep_branches, mode_probs


def mode_purity(variant: str, n: int, workdir: Path, seed: int = 1) -> dict:
    """Per prompt that leaves colour open and per attribute: for each mode of the conditional branch at
    the last step, the mean class probabilities of the baseline images in it, and their count."""
    from benchmark.world import load_world, weights_dir
    from classifiers.world import WorldClassifier

    world, clf = load_world(variant), WorldClassifier()
    prompts = [p.text for p in world.prompts if "color" not in p.named]  # what a world run prepares on
    data = dataclasses.replace(world.method_data, target=None, nontarget=None, classifier=None, attribute=None,
                               prompts=prompts)
    method = SelfDebias()
    shipped = weights_dir(variant) / "methods" / "selfdebias"
    for folder in sorted(shipped.iterdir()) if shipped.is_dir() else []:  # prepare loads the one that matches
        shutil.copytree(folder, workdir, dirs_exist_ok=True)
    method.prepare(world.components, data, workdir)
    out: dict = {}
    for prompt in prompts:
        store: dict[int, torch.Tensor] = {}
        seeds = image_seeds(seed, prompt, n)
        images = sample(world.components, [prompt] * n, seeds, mid_block_fn=partial(keep_branches, store))
        last = max(store)
        with torch.no_grad():
            z = method.projector(store[last][:, -1], torch.full((n,), last))
        centroids = method.modes[prompt]["cond"][last]
        modes = mode_probs(z, centroids, method.params.tau).argmax(1).numpy()
        probs = clf.predict(images)
        out[prompt] = {a: [[round(float(probs[a][modes == c].mean(0)[j]), 3) if (modes == c).any() else None
                            for j in range(probs[a].shape[1])] + [int((modes == c).sum())]
                           for c in range(int(centroids.shape[0]))] for a in clf.attributes}
    return out


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="debias-bench method selfdebias", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modes = sub.add_parser("modes", help="print the modes discovered per prompt from a report (.json)")
    modes.add_argument("manifest", type=Path)
    purity = sub.add_parser("purity", help="class probabilities of baseline images per discovered mode (world)")
    purity.add_argument("--variant", default="default", help="world variant (default, alt)")
    purity.add_argument("--n", type=int, default=32, help="images per prompt")
    purity.add_argument("--workdir", type=Path, default=Path(".debias-cache/selfdebias-purity"),
                        help="artefact folder (the shipped artefacts are copied in)")
    args = parser.parse_args(argv)
    if args.command == "modes":
        if not args.manifest.is_file():
            raise ConfigError(f"{args.manifest}: no such report")
        try:
            report = json.loads(args.manifest.read_text())
        except ValueError as exc:
            raise ConfigError(f"{args.manifest}: not JSON ({exc})") from None
        for prompt, branches in report.get("modes", {}).items():
            for branch, info in branches.items():
                print(f"{prompt!r:40} {branch:6} k={info['k']} sizes={info['sizes_last_step']}")
        return 0
    if args.n < 1:
        raise ConfigError(f"--n: must be >= 1, got {args.n}")
    print(json.dumps(mode_purity(args.variant, args.n, args.workdir), indent=1))
    return 0
