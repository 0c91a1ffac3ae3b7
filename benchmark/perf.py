"""Throughput benchmark: baseline generation through the harness vs a bare diffusers loop.

    debias-bench perf [--profile tiny|world] [--images 256] [--batch-size 64] [--repeats 3]

Reports (1) images/s of the harness (runner, cache writes included) against a bare loop with the
same components, batch and steps (``StableDiffusionPipeline``, or ``StableDiffusionXLPipeline`` for
SDXL, for latent models; the same scheduler/UNet loop written inline for pixel-space ones), their ratio (goal >= 0.95),
(2) classify + score time as a share of generation time (goal <= 5 %; the FID reference statistics,
computed once per cache and then read back, are timed on their own as ``reference_seconds`` and kept
warm for the repeats, as in every run after a cache's first), and (3) the time spent writing
the run's files (results, tables, the HTML report with its figures), a fixed cost per run that does
not grow with the number of images. Numbers, not a pass/fail.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

# The tiny profile's classifier (palette) predicts only `tone`, which no shipped prompt set scores.
TINY_PROMPT_SET = """\
name: perf-tones
description: one prompt for `debias-bench perf --profile tiny`
source: project-made
attributes: [tone]
classes: {tone: [warm, cool]}
images_per_prompt: 1
prompts:
  - {id: person, text: "a photo of a person"}
"""


def measure(profile_name: str, images: int, batch_size: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        base_cfg = {"profile": profile_name, "methods": [{"name": "baseline"}], "batch_size": batch_size,
                    "images_per_prompt": images, "max_prompts": 1, "metrics": {"bootstrap": 1000}}
        if profile_name == "tiny":
            prompt_set = Path(tmp) / "perf-tones.yaml"
            prompt_set.write_text(TINY_PROMPT_SET)
            base_cfg |= {"prompt_sets": [str(prompt_set)], "classifiers": ["palette"]}
        return _measure(base_cfg, repeats)


def _measure(base_cfg: dict, repeats: int) -> dict:
    import numpy as np
    import torch

    from benchmark.bare_loop import bare_loop
    from benchmark.config import load_config
    from benchmark.profiles import load_profile

    profile_name, images, batch_size = base_cfg["profile"], base_cfg["images_per_prompt"], base_cfg["batch_size"]
    profile = load_profile(load_config(None, base_cfg))
    comps = profile.components
    harness, bare, overhead, write = [], [], [], []
    prompt = "a photo of a person"
    with tempfile.TemporaryDirectory() as warm:
        reference_seconds = _warm_reference(profile, Path(warm) / "reference")
        for _ in range(repeats):
            seeds = list(range(images))
            t0 = time.perf_counter()
            for s in range(0, images, batch_size):
                bare_loop(comps, [prompt] * len(seeds[s:s + batch_size]), seeds[s:s + batch_size])
            bare.append(images / (time.perf_counter() - t0))
            gen, share, seconds = _harness_run(base_cfg, profile, Path(warm) / "reference")
            harness.append(images / gen)
            overhead.append(share)
            write.append(seconds)
    return {
        "profile": profile_name, "images": images, "batch_size": batch_size,
        "steps": comps.sampler.num_inference_steps, "threads": torch.get_num_threads(),
        "bare_images_per_s": round(float(np.median(bare)), 2),
        "harness_images_per_s": round(float(np.median(harness)), 2),
        "throughput_ratio": round(float(np.median(harness) / np.median(bare)), 3),
        "classify_score_share_of_generation": round(float(np.median(overhead)), 4),
        "reference_seconds": None if reference_seconds is None else round(reference_seconds, 2),
        "write_seconds": round(float(np.median(write)), 2),
    }


def _warm_reference(profile: object, folder: Path) -> float | None:
    """Compute the profile's FID reference statistics into ``folder`` (a cache's ``reference/``) once;
    returns the seconds it took (None: the profile has no reference)."""
    from benchmark.scoring import profile_reference_stats

    if getattr(profile, "reference", None) is None or getattr(profile, "features", None) is None:
        return None
    t0 = time.perf_counter()
    profile_reference_stats(profile, folder.parent)
    return time.perf_counter() - t0


def _harness_run(base_cfg: dict, profile: object, reference: Path) -> tuple[float, float, float]:
    """One run of the harness in a fresh cache holding only the warm reference statistics: generation
    seconds, classify + score as a share of them, and the seconds spent writing."""
    import shutil

    from benchmark.config import load_config
    from benchmark.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        if reference.is_dir():
            shutil.copytree(reference, Path(tmp) / "cache" / "reference")
        config = load_config(None, {**base_cfg, "cache_dir": f"{tmp}/cache", "output_dir": f"{tmp}/out"})
        runner = Runner(config, profile=profile, progress=False)
        runner.run()
        gen = runner.cost["baseline"]["generate_seconds"]
        return gen, (runner.phase_seconds["classify"] + runner.phase_seconds["score"]) / gen, runner.phase_seconds["write"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="world", choices=["world", "tiny"], help="base model to measure")
    parser.add_argument("--images", type=int, help="images per repeat (default 200; with --model 8)")
    parser.add_argument("--batch-size", type=int, help="images per generation batch (default 100; with --model 8)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    harness = parser.add_argument_group("the harness's own costs side by side (benchmark.perf_harness)")
    harness.add_argument("--harness", action="store_true",
                         help="time the CLI's start, report, leaderboard add, a warm re-score and the scoring share")
    harness.add_argument("--warm-cache", type=Path, metavar="DIR",
                         help="with --harness: a world-suite run's cache, to time a warm re-score")
    real = parser.add_argument_group("a real-shaped model, per method (benchmark.perf_real)")
    real.add_argument("--model", help="measure every method on this Stable Diffusion model instead (a preset, "
                                      "diffusers id, folder, or sd15-random / sdxl-random); --images and "
                                      "--batch-size then count images sampled per method")
    real.add_argument("--methods", type=lambda s: [m for m in s.split(",") if m],
                      help="comma-separated methods (default: all five)")
    real.add_argument("--resolution", type=int, help="image size in pixels (default: the model's own)")
    real.add_argument("--steps", type=int, default=50, help="sampling steps")
    real.add_argument("--timeout", type=float, help="on a CPU, seconds after which a method's process is stopped")


def report(args: argparse.Namespace) -> int:
    """Measure and print the numbers (``debias-bench perf``)."""
    if args.model:
        return _report_real(args)
    numbers = measure(args.profile, _given(args.images, 200), _given(args.batch_size, 100), args.repeats)
    text = json.dumps(numbers, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


def _given(value: int | None, default: int) -> int:
    """An option's value, or its default when it was not given (a given 0 stays 0, to be refused)."""
    return default if value is None else value


def _report_real(args: argparse.Namespace) -> int:
    from benchmark.errors import ConfigError
    from benchmark.perf_real import METHOD_ORDER, table
    from benchmark.perf_real import measure as measure_real

    methods = args.methods or list(METHOD_ORDER)
    unknown = [m for m in methods if m not in METHOD_ORDER]
    if unknown:
        raise ConfigError(f"perf: unknown method {unknown[0]!r} (known: {', '.join(METHOD_ORDER)})")
    images, batch_size = _given(args.images, 8), _given(args.batch_size, 8)
    if min(images, batch_size, args.repeats, args.steps) < 1:
        raise ConfigError("perf: --images, --batch-size, --repeats and --steps must be at least 1")
    if args.resolution is not None and (args.resolution < 8 or args.resolution % 8):
        raise ConfigError(f"perf: --resolution {args.resolution}: must be a positive multiple of 8 (the VAE's factor)")
    rows = measure_real(args.model, methods, args.resolution, args.steps, batch_size, images, args.repeats,
                       args.timeout)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all("error" not in r for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="debias-bench perf", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return report(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
