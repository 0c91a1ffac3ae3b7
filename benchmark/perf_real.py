"""Per-method cost on a real-shaped Stable Diffusion model (``debias-bench perf --model sd15-random``).

For each method, in its own process (so that its peak memory is its own): load the model as the real
profile does (CUDA with fp16 when present, else CPU float32), prepare the method with the smallest
budgets that run every stage once (``PERF_BUDGETS``), then sample ``images`` images at ``batch_size``
after one untimed warm-up batch. Reported per method: preparation seconds, images per second, UNet
evaluations per image, and peak memory (GPU: ``torch.cuda.max_memory_allocated`` per stage; CPU: the
process's peak resident set, which only grows). For the baseline the same process also times a bare
diffusers ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` loop at the same batch, steps
and dtype, alternating with the harness's sampler; their ratio is the harness's overhead (goal 0.95
or better).

The training data are seeded random images and SelfDebias's embedder is an open_clip ViT-B-32 with
seeded random weights: the images are noise, but every tensor has its real shape and every operation
its real cost. Numbers, not a pass/fail.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS = ["a photo of a doctor", "a photo of a nurse"]
# the smallest budgets that still run every stage of each method's preparation once
PERF_BUDGETS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "ddm": {"max_steps": 2, "batch_size": 1, "entropy_images": 2},
    "invdiff": {"num_groups": 2, "group_epochs": 2, "loss_draws": 1, "train_steps": 2, "batch_size": 1,
                "lr_warmup_steps": 0, "lr_schedule": "constant"},
    "selfdebias": {"num_samples": 4, "epochs": 1, "train_batch": 8, "hidden_dim": 64, "step_embed_dim": 16,
                   "k_max": 2, "guidance_batch": 2},
    "difflens": {"samples_per_prompt": 4, "sae_steps": 2, "sae_batch": 64, "probe_epochs": 1},
}
METHOD_ORDER = tuple(PERF_BUDGETS)
MIN_STEPS = {"difflens": 4}  # its edit window needs more than two steps


def _peak_mb(device: Any) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device) // 2**20)
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def _reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _method_data(resolution: int):
    """Seeded random training images (target: both tones labelled; nontarget) with a weightless
    classifier and a randomly initialised CLIP-shaped embedder."""
    import numpy as np
    import torch

    from benchmark.embedding import OpenClipEmbedder
    from benchmark.images import ImageSet
    from classifiers.palette import PaletteClassifier
    from methods.base import MethodData

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, resolution, resolution, 3), dtype=np.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        embedder = OpenClipEmbedder("ViT-B-32", pretrained=None)
    return MethodData(target=ImageSet(images, [PROMPTS[i % 2] for i in range(4)], "target",
                                      labels={"tone": np.array([0, 1, 0, 1])}),
                      nontarget=ImageSet(images[::-1].copy(), ["a photo"] * 4, "nontarget"),
                      prompts=PROMPTS, classifier=PaletteClassifier(), embedder=embedder, attribute="tone")


def _timed(fn, device: Any) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def load_base(model: str, resolution: int | None, steps: int) -> tuple[Any, dict[str, Any]]:
    """The model as the real profile loads it, at this size and step count, with what describes the run."""
    import torch

    from benchmark.real_models import load_sd

    t0 = time.perf_counter()
    base, _ = load_sd(model)
    device = base.device
    resolution = resolution or base.sampler.height
    base = base.replace(sampler=dataclasses.replace(base.sampler, num_inference_steps=steps, height=resolution,
                                                    width=resolution))
    return base, {
        "model": model, "device": str(device), "dtype": str(base.dtype).replace("torch.", ""),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "resolution": resolution,
        "guidance": base.sampler.guidance_scale,
        "unet_parameters_m": round(sum(p.numel() for p in base.unet.parameters()) / 1e6, 1),
        "mid_block_channels": int(base.unet.config.block_out_channels[-1]),
        "load_s": round(time.perf_counter() - t0, 1), "load_peak_mb": _peak_mb(device),
    }


def measure_method(base: Any, about: dict[str, Any], name: str, batch_size: int, images: int, repeats: int,
                   workdir: Path) -> dict[str, Any]:
    """Prepare one method on ``base`` (from ``load_base``) and time its sampling; see the module doc."""
    import numpy as np

    from benchmark.bare_loop import bare_loop
    from benchmark.counting import count_unet_evaluations
    from benchmark.runner import scheduler_from
    from methods import METHODS

    device = base.device
    steps = max(base.sampler.num_inference_steps, MIN_STEPS.get(name, 0))
    if steps != base.sampler.num_inference_steps:
        base = base.replace(sampler=dataclasses.replace(base.sampler, num_inference_steps=steps))
    if name == "difflens":  # its two-pass step is DDIM's (the paper's sampler)
        base = base.replace(scheduler=scheduler_from("ddim", base.scheduler))
    resolution = base.sampler.height
    out: dict[str, Any] = {"method": name, **about, "steps": steps, "batch_size": batch_size, "images": images,
                           "budget": PERF_BUDGETS[name]}
    data = _method_data(resolution)
    method = METHODS.get(name).from_config(PERF_BUDGETS[name])
    _reset_peak(device)
    out["prepare_s"] = round(_timed(lambda: method.prepare(base, data, workdir), device), 1)
    out["prepare_peak_mb"] = _peak_mb(device)
    prompts, seeds = [PROMPTS[0]] * batch_size, list(range(batch_size))
    _reset_peak(device)
    got, evals = count_unet_evaluations(lambda: method.generate(prompts, seeds))  # the warm-up batch
    _sync(device)
    if got.shape != (batch_size, resolution, resolution, 3) or got.dtype != np.uint8:
        raise RuntimeError(f"{name}: generated {got.dtype} {got.shape}, expected uint8 "
                           f"({batch_size}, {resolution}, {resolution}, 3)")
    out["unet_evals_per_image"] = evals / batch_size
    batches = [list(range(s, min(s + batch_size, images))) for s in range(0, images, batch_size)]
    harness, bare = [], []
    if name == "baseline":
        bare_loop(base, prompts, seeds)  # its warm-up
    for _ in range(repeats):
        harness.append(images / sum(_timed(lambda b=b: method.generate([PROMPTS[0]] * len(b), b), device)
                                    for b in batches))
        if name == "baseline":
            bare.append(images / sum(_timed(lambda b=b: bare_loop(base, [PROMPTS[0]] * len(b), b), device)
                                     for b in batches))
    out["images_per_s"] = round(float(np.median(harness)), 4)
    out["sample_peak_mb"] = _peak_mb(device)
    if bare:
        out["bare_images_per_s"] = round(float(np.median(bare)), 4)
        out["throughput_ratio"] = round(float(np.median(harness) / np.median(bare)), 3)
    return out


def measure_in_process(model: str, methods: list[str], resolution: int | None, steps: int, batch_size: int,
                       images: int, repeats: int, workdir: Path) -> list[dict[str, Any]]:
    """Every method on one loaded model (on a GPU, where peak memory is reset per stage); a method that
    fails is reported with its error and the others go on."""
    import gc

    import torch

    base, about = load_base(model, resolution, steps)
    rows = []
    for name in methods:
        try:
            rows.append(measure_method(base, about, name, batch_size, images, repeats, workdir / name))
        except Exception as exc:  # noqa: BLE001 - reported in the row; the other methods still run
            rows.append({"method": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def measure(model: str, methods: list[str], resolution: int | None, steps: int, batch_size: int, images: int,
            repeats: int, timeout: float | None = None) -> list[dict[str, Any]]:
    """On a GPU: every method in this process, the model loaded once (peak memory is reset per stage).
    On a CPU: each method in its own process, so that its peak resident memory is its own; a method that
    fails or runs past ``timeout`` seconds is reported with its error's last line and the others go on."""
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if torch.cuda.is_available():
            return measure_in_process(model, methods, resolution, steps, batch_size, images, repeats, Path(tmp))
        for name in methods:
            args = json.dumps({"model": model, "name": name, "resolution": resolution, "steps": steps,
                               "batch_size": batch_size, "images": images, "repeats": repeats,
                               "workdir": str(Path(tmp) / name)})
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
                   "DIFFUSERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
            try:
                proc = subprocess.run([sys.executable, "-m", "benchmark.perf_real", args], capture_output=True,
                                      text=True, env=env, timeout=timeout)
            except subprocess.TimeoutExpired:
                rows.append({"method": name, "error": f"did not finish within {timeout:.0f} s"})
                continue
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
                rows.append({"method": name, "error": last})
            else:
                rows.append(json.loads(lines[-1]))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table (the docs' format)."""
    head = ("| method | preparation (s) | images/s | vs bare diffusers | UNet evals / image | "
            "peak memory, preparation / sampling (MB) |")
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} | | | | |")
            continue
        ratio = f"{r['throughput_ratio']:.3f} (bare {r['bare_images_per_s']:.4g}/s)" if "throughput_ratio" in r else ""
        lines.append(f"| {r['method']} | {r['prepare_s']} | {r['images_per_s']:.4g} | {ratio} | "
                     f"{r['unet_evals_per_image']:g} | {r['prepare_peak_mb']} / {r['sample_peak_mb']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    loaded, described = load_base(a["model"], a["resolution"], a["steps"])
    print(json.dumps(measure_method(loaded, described, a["name"], a["batch_size"], a["images"], a["repeats"],
                                    Path(a["workdir"]))))
