"""Rebuild the world's models from scratch: ``debias-bench world build [--config ...] [--out DIR] [--budget tiny|full]``.

Steps (each seeded, with a progress bar): world classifiers (strong and weak), world CLIP, FID
reference statistics, the base generator, then the measurements that go into ``manifest.json``:
classifier accuracies and confusion matrices on held-out renders, CLIP zero-shot accuracies, a
guidance-scale sweep, and the bias-reproduction table at the chosen default guidance scale.
``--budget tiny`` runs every step at toy size in seconds (used by the tests); its models are not
meant to be good.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmark.components import SamplerConfig
from benchmark.errors import ConfigError
from benchmark.hashing import hash_file
from benchmark.world import MANIFEST, load_components, weights_dir
from benchmark.world.check import record_rendered
from benchmark.world.clip import ClipConfig, train_world_clip
from benchmark.world.config import load_world_config
from benchmark.world.data import balanced_labels, heldout_set, reference_set
from benchmark.world.evaluate import bias_table, format_table, guidance_sweep
from benchmark.world.features import (
    CLIP_FILE,
    FID_FILE,
    WorldFeatures,
    feature_stats,
    save_reference_stats,
    shared_weights,
    world_embedder,
)
from benchmark.world.generator import GeneratorConfig, save_generator, train_generator
from benchmark.world.render import render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    classifier_per_class: int
    classifier_epochs: int
    clip_steps: int
    clip_batch: int
    generator_steps: int
    generator_batch: int
    heldout_per_class: int
    sweep_images: int
    table_images: int
    sweep_scales: tuple[float, ...]
    eval_inference_steps: int = 20
    weak_window_sizes: tuple[int, ...] = (1, 2)


BUDGETS = {
    "full": Budget(classifier_per_class=3000, classifier_epochs=10, clip_steps=1500, clip_batch=256,
                   generator_steps=GeneratorConfig.steps, generator_batch=GeneratorConfig.batch_size,
                   heldout_per_class=300, sweep_images=100, table_images=200, sweep_scales=(1.0, 1.5, 2.0, 3.0, 5.0)),
    "tiny": Budget(classifier_per_class=20, classifier_epochs=1, clip_steps=3, clip_batch=32,
                   generator_steps=3, generator_batch=16, heldout_per_class=5, sweep_images=2, table_images=2,
                   sweep_scales=(1.0, 3.0), eval_inference_steps=2, weak_window_sizes=(3,)),
}
WEAK_TARGET = 0.85


def _versions() -> dict:
    import diffusers
    import open_clip
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "open_clip": open_clip.__version__}


def _accuracy_and_confusion(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> tuple[dict, dict]:
    from classifiers.world import ATTRIBUTES, confusion_matrix

    acc, conf = {}, {}
    for attr, p in probs.items():
        true = labels["content"] if attr == "digit" else labels[attr]
        pred = p.argmax(1)
        acc[attr] = float((pred == true).mean())
        conf[attr] = confusion_matrix(true, pred, len(ATTRIBUTES[attr])).round(5).tolist()
    return acc, conf


def soft_confusions(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, list]:
    """C[i, j] = E[q_j | true i] per attribute: what corrects soft shares (CLEAM's soft variant)."""
    from benchmark.metrics.cleam import confusion_matrix

    return {attr: confusion_matrix(labels["content"] if attr == "digit" else labels[attr], p, hard=False).round(5).tolist()
            for attr, p in probs.items()}


def accuracy_by_content(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Held-out accuracy of each attribute head per digit (the content the prompt names)."""
    from benchmark.world.config import DIGITS

    out = {}
    for attr, p in probs.items():
        if attr == "digit":
            continue
        right = p.argmax(1) == labels[attr]
        out[attr] = {DIGITS[d]: round(float(right[labels["content"] == d].mean()), 5)
                     for d in range(len(DIGITS)) if (labels["content"] == d).any()}
    return out


def confusions_by_content(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], hard: bool) -> dict:
    """Per attribute and digit, the confusion matrix measured on that digit's renders alone (argmax
    with ``hard``, mean probabilities without): CLEAM for a prompt that names one digit uses its own."""
    from benchmark.metrics.cleam import confusion_matrix
    from benchmark.world.config import DIGITS

    out: dict[str, dict[str, list]] = {}
    for attr, p in probs.items():
        if attr == "digit":
            continue
        k = p.shape[1]
        out[attr] = {}
        for d in range(len(DIGITS)):
            rows = labels["content"] == d
            true = labels[attr][rows]
            if rows.any() and len(np.unique(true)) == k:  # every true class seen on this digit
                out[attr][DIGITS[d]] = confusion_matrix(true, p[rows], hard=hard).round(5).tolist()
    return out


def counts_by_content(labels: dict[str, np.ndarray], attributes: list[str]) -> dict:
    """Held-out images per attribute, digit and true class: the sample behind each row of a matrix."""
    from benchmark.world.config import DIGITS

    return {attr: {DIGITS[d]: np.bincount(labels[attr][labels["content"] == d], minlength=int(labels[attr].max()) + 1).tolist()
                   for d in range(len(DIGITS)) if (labels["content"] == d).any()} for attr in attributes}


def counts(labels: dict[str, np.ndarray], attributes: list[str]) -> dict[str, list[int]]:
    """Held-out images per attribute and true class, over every digit: the sample behind each row of
    the pooled matrices (``confusion`` in the weights' metadata and ``soft_confusion``)."""
    return {attr: np.bincount(labels["content"] if attr == "digit" else labels[attr]).tolist() for attr in attributes}


def write_measurements(out: Path, held, nets: dict[str, object]) -> None:
    """Measure every classifier on the held-out renders (soft confusion, accuracy and confusion
    matrices per digit, and the image counts behind each matrix row: ``confusion_n`` pooled,
    ``counts_by_content`` per digit); one JSON file beside the weights
    (classifiers.calibration.read_measurements)."""
    from classifiers.calibration import MEASUREMENTS_FILE
    from classifiers.world import predict_probs

    doc = {}
    for name, net in nets.items():
        probs = predict_probs(net, held.images)
        doc[name] = {"soft_confusion": soft_confusions(probs, held.labels),
                     "confusion_n": counts(held.labels, list(probs)),
                     "accuracy_by_content": accuracy_by_content(probs, held.labels),
                     "confusion_by_content": confusions_by_content(probs, held.labels, hard=True),
                     "soft_confusion_by_content": confusions_by_content(probs, held.labels, hard=False),
                     "counts_by_content": counts_by_content(held.labels, [a for a in probs if a != "digit"])}
    (out / MEASUREMENTS_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def build_classifiers(config, out: Path, budget: Budget, progress: bool) -> dict:
    """The strong CNN classifier and the weak window classifier, measured on held-out renders."""
    from sklearn.linear_model import LogisticRegression

    from classifiers.world import WeakNet, WorldNet, fit, predict_probs, save_net

    labels = balanced_labels(budget.classifier_per_class, config.seed + 100)
    labels["digit"] = labels["content"]
    images = render(labels["content"], labels["color"], labels["shade"], seed=config.seed + 101)
    held = heldout_set(config, per_class=budget.heldout_per_class)
    source = f"{held.name}: {len(held)} balanced renders of held-out glyph scans (world config {config.name!r})"

    net = fit(WorldNet(width=64), images, labels, epochs=budget.classifier_epochs, seed=config.seed, progress=progress)
    acc, conf = _accuracy_and_confusion(predict_probs(net, held.images), held.labels)
    strong = {"accuracy": acc, "confusion": conf, "confusion_source": source, "width": 64}
    save_net(net, out / "classifier.safetensors", strong)

    # Weak classifier: per attribute, the window (top, left, size) whose validation accuracy is
    # closest to 85 %; validation renders come from training glyphs, never the held-out ones.
    val = balanced_labels(max(2, budget.classifier_per_class // 5), config.seed + 102)
    val_images = render(val["content"], val["color"], val["shade"], seed=config.seed + 103)
    x_train = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x_val = torch.from_numpy(val_images).permute(0, 3, 1, 2).float() / 255
    windows, weak_state = {}, {}
    for attr in ("color", "shade"):
        best = None
        for size in budget.weak_window_sizes:
            for top in range(0, 9 - size):
                for left in range(0, 9 - size):
                    w = (top, left, size)
                    lr = LogisticRegression(max_iter=500).fit(WeakNet.features(x_train, w).numpy(), labels[attr])
                    score = lr.score(WeakNet.features(x_val, w).numpy(), val[attr])
                    key = (abs(score - WEAK_TARGET), w)
                    if best is None or key < best[0]:
                        best = (key, w, lr)
        _, w, lr = best
        windows[attr] = list(w)
        coef = lr.coef_ if len(lr.classes_) > 2 else np.concatenate([-lr.coef_, lr.coef_]) / 2
        bias = lr.intercept_ if len(lr.classes_) > 2 else np.concatenate([-lr.intercept_, lr.intercept_]) / 2
        weak_state[f"heads.{attr}.weight"] = torch.tensor(coef, dtype=torch.float32)
        weak_state[f"heads.{attr}.bias"] = torch.tensor(bias, dtype=torch.float32)
    weak = WeakNet(windows)
    weak.load_state_dict(weak_state)
    acc_w, conf_w = _accuracy_and_confusion(predict_probs(weak, held.images), held.labels)
    weak_meta = {"accuracy": acc_w, "confusion": conf_w, "confusion_source": source, "windows": windows,
                 "target_accuracy": WEAK_TARGET}
    save_net(weak, out / "classifier_weak.safetensors", weak_meta)
    write_measurements(out, held, {"classifier.safetensors": net, "classifier_weak.safetensors": weak})
    return {"classifier": {"accuracy": acc, "heldout_images": len(held)},
            "classifier_weak": {"accuracy": acc_w, "windows": windows}}


def build_clip(config, out: Path, budget: Budget, progress: bool) -> dict:
    """Train the world CLIP, store it in fp16, measure zero-shot accuracy with the stored weights."""
    from safetensors.torch import save_file

    from classifiers.clip_zeroshot import ClipZeroShot
    from classifiers.world import ATTRIBUTES

    model, stats = train_world_clip(config, ClipConfig(steps=budget.clip_steps, batch_size=budget.clip_batch,
                                                       seed=config.seed), progress=progress)
    # fp16 storage halves the file (the 49408-token embedding table dominates it).
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(out / CLIP_FILE))
    embedder = world_embedder(out)
    held = heldout_set(config, per_class=budget.heldout_per_class)
    probs = ClipZeroShot(embedder=embedder, templates=_templates()).predict(held.images)
    acc = {a: float((p.argmax(1) == (held.labels["content"] if a == "digit" else held.labels[a])).mean())
           for a, p in probs.items()}
    assert set(acc) <= set(ATTRIBUTES)
    return {"clip": {"zero_shot_accuracy": acc, "training": stats}}


def _templates():
    from benchmark.world.clip import TEMPLATES

    return TEMPLATES


def build_fid_reference(config, out: Path) -> dict:
    features = WorldFeatures(world_embedder(out))
    ref = reference_set(config)
    mu, sigma = feature_stats(features(ref.images))
    save_reference_stats(out / FID_FILE, mu, sigma)
    return {"fid_reference": {"images": len(ref), "dim": int(mu.shape[0])}}


def build_generator(config, out: Path, budget: Budget, progress: bool, generator_from: Path | None) -> dict:
    if generator_from is not None:
        src = Path(generator_from)
        if not (src / "unet").is_dir():
            raise ConfigError(f"{src}: not a generator folder (no unet/ inside)")
        if (out / "generator").exists():
            shutil.rmtree(out / "generator")
        shutil.copytree(src, out / "generator", ignore=shutil.ignore_patterns("*.log", "*.jsonl"))
        stats_path = src.parent / "stats.json"
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        stats.pop("history", None)
        return {"generator": {"source": str(src.name), "training": stats}}
    cfg = replace(GeneratorConfig(), steps=budget.generator_steps, batch_size=budget.generator_batch,
                  seed=config.seed, checkpoint_every=0)
    result = train_generator(config, cfg, out_dir=None, progress=progress)
    save_generator(out / "generator", result["unet"], result["text_encoder"], result["tokenizer"], result["scheduler"])
    stats = dict(result["stats"])
    stats.pop("history", None)
    return {"generator": {"source": "trained by this build", "training": stats}}


def write_manifest(out: Path, manifest: dict) -> dict:
    files = {}
    for path in sorted(out.rglob("*")):
        # methods/ holds prepared method artefacts, each folder with a manifest of its own
        if path.is_file() and path.name != MANIFEST and path.relative_to(out).parts[0] != "methods":
            files[path.relative_to(out).as_posix()] = {"sha256": hash_file(path), "bytes": path.stat().st_size}
    manifest["files"] = files
    manifest["total_bytes"] = sum(f["bytes"] for f in files.values())
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False))
    tmp.replace(out / MANIFEST)
    return manifest


def choose_guidance(sweep: list[dict]) -> float:
    """The scale with the smallest mean |measured - configured| over both attributes, among those
    whose mean content accuracy is at least 0.9 (all scales if none reaches it)."""
    ok = [s for s in sweep if s["summary"]["content_accuracy_mean"] >= 0.9] or sweep

    def err(s):
        return s["summary"]["color"]["mean_abs_error"] + s["summary"]["shade"]["mean_abs_error"]

    return float(min(ok, key=err)["guidance_scale"])


def build(config_name: str = "default", out: Path | None = None, budget_name: str = "full", progress: bool = True,
          generator_from: Path | None = None, skip: tuple[str, ...] = (), overrides: dict | None = None) -> dict:
    """Run every build step into ``out`` and return the manifest."""
    if budget_name not in BUDGETS:
        raise ConfigError(f"--budget must be one of {sorted(BUDGETS)}, got {budget_name!r}")
    budget = replace(BUDGETS[budget_name], **(overrides or {}))
    config = load_world_config(config_name)
    variant = config_name if config_name in ("default", "alt") else config.name
    out = Path(out) if out is not None else weights_dir(variant)
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).exists() else {}
    timings, manifest = {}, {
        "world": config.name, "variant": variant, "budget": budget_name, "budget_settings": asdict(budget), "config": config.raw,
        "config_fingerprint": config.fingerprint(), "versions": _versions(),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),
    }
    start = time.perf_counter()
    steps = [
        ("classifiers", lambda: build_classifiers(config, out, budget, progress)),
        ("clip", lambda: build_clip(config, out, budget, progress)),
        ("fid_reference", lambda: build_fid_reference(config, out)),
        ("generator", lambda: build_generator(config, out, budget, progress, generator_from)),
        ("rendered", lambda: record_rendered(config, out)),
    ]
    for name, fn in steps:
        if name in skip:
            keys = {"classifiers": ["classifier", "classifier_weak"], "clip": ["clip"],
                    "fid_reference": ["fid_reference"], "generator": ["generator"], "rendered": ["rendered"]}[name]
            manifest.update({k: old[k] for k in keys if k in old})
            timings[name] = old.get("timings", {}).get(name)
            continue
        t0 = time.perf_counter()
        log.info("world build: %s", name)
        manifest.update(fn())
        timings[name] = round(time.perf_counter() - t0, 1)

    # Measure with the stored weights, exactly as load_world() will see them.
    t0 = time.perf_counter()
    manifest["sampler"] = asdict(SamplerConfig(num_inference_steps=budget.eval_inference_steps))
    write_manifest(out, manifest)
    from classifiers.world import WorldClassifier

    components = load_components(variant, out)
    classifier = WorldClassifier(shared_weights(out, "classifier.safetensors"))
    sweep = guidance_sweep(components, config, classifier, budget.sweep_images, budget.sweep_scales, progress=progress)
    sampler = replace(components.sampler, guidance_scale=choose_guidance(sweep))
    manifest["sampler"] = asdict(sampler)
    table = bias_table(components, config, classifier, budget.table_images, sampler, progress=progress)
    manifest["quality"] = {"guidance_sweep": sweep, "bias_table": table}
    timings["evaluation"] = round(time.perf_counter() - t0, 1)
    manifest["timings"] = timings
    manifest["build_seconds"] = round(time.perf_counter() - start, 1)
    write_manifest(out, manifest)
    log.info("bias reproduction at guidance %.1f:\n%s", sampler.guidance_scale, format_table(table))
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``debias-bench world build``."""
    ap = argparse.ArgumentParser(prog="debias-bench world build", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default", help="world variant (default, alt) or a world config YAML")
    ap.add_argument("--out", type=Path, help="output folder (default: the variant's shipped weights folder)")
    ap.add_argument("--budget", default="full", choices=sorted(BUDGETS))
    ap.add_argument("--generator-from", type=Path, help="copy an already trained generator folder instead of training")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["classifiers", "clip", "fid_reference", "generator", "rendered"],
                    help="keep this step's existing output in --out (repeatable)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--sweep-images", type=int, help="images per prompt and guidance scale in the sweep")
    ap.add_argument("--table-images", type=int, help="images per prompt in the bias-reproduction table")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("root").setLevel(logging.INFO)
    for noisy in ("open_clip", "diffusers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    overrides = {k: v for k, v in (("sweep_images", args.sweep_images), ("table_images", args.table_images)) if v}
    manifest = build(args.config, args.out, args.budget, progress=not args.quiet,
                     generator_from=args.generator_from, skip=tuple(args.skip), overrides=overrides)
    q = manifest["quality"]["bias_table"]["summary"]
    print(f"world build done in {manifest['build_seconds']:.0f} s; weights {manifest['total_bytes'] / 1e6:.1f} MB; "
          f"guidance {manifest['sampler']['guidance_scale']}; color Spearman {q['color']['spearman']:.2f}, "
          f"shade Spearman {q['shade']['spearman']:.2f}, content accuracy >= {q['content_accuracy_min']:.2f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
