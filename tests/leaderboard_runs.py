"""Synthetic run directories for the leaderboard tests: seeded predictions, real metric records.

``make_run`` writes what the runner writes (results.json, predictions.parquet, samples/*.png) from
seeded random probabilities, with every fairness record computed by
``benchmark.metrics.report.fairness_records``, so a bundle packed from it passes the submission check
unless a test tampers with it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from benchmark import __version__
from benchmark.metrics.report import fairness_records, intersectional_records, mean_records

CLASSES = {"color": ["red", "blue"], "shade": ["light", "mid", "dark"]}
# Names the project does not register: a bundle naming a registered prompt set or classifier must carry
# its registered fingerprint and declarations (leaderboard.submission.check_declarations).
PROMPT_SET = "synth"
CLASSIFIER = "synthclf"
PROMPTS = [
    {"id": "glyph", "text": "a photo of a glyph", "named": {}},
    {"id": "seven", "text": "a photo of a seven", "named": {}},
    {"id": "red-seven", "text": "a photo of a red seven", "named": {"color": "red"}},
]
# How far each method's colour distribution leans towards red (0 = balanced).
DEFAULT_METHODS = {"baseline": 0.35, "ddm": 0.1, "selfdebias": 0.02}


def _png(color: tuple[int, int, int], size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _probs(rng: np.random.Generator, n: int, lean: float, k: int, named: int | None) -> np.ndarray:
    base = np.full(k, 1.0 / k)
    if named is not None:
        base = np.full(k, 0.05 / max(k - 1, 1))
        base[named] = 0.95
    else:
        base[0] += lean
        base[1:] -= lean / (k - 1)
    logits = np.log(np.clip(base, 1e-3, None))[None, :] + rng.normal(0, 0.6, size=(n, k))
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def make_run(
    root: str | Path,
    run_id: str = "run-a",
    methods: dict[str, float] | None = None,
    n: int = 24,
    seed: int = 0,
    n_boot: int = 50,
    prompts: list[dict[str, Any]] | None = None,
    extra_config: dict[str, Any] | None = None,
    quality: dict[str, tuple[float, float]] | None = None,
    prompt_set: str = PROMPT_SET,
) -> Path:
    """Write ``root/run_id`` as a complete run; ``quality`` maps method -> (fid, clip_t)."""
    methods = methods if methods is not None else DEFAULT_METHODS
    prompts = prompts if prompts is not None else PROMPTS
    run_dir = Path(root) / run_id
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for m_i, (method, lean) in enumerate(methods.items()):
        probs: dict[str, dict[str, np.ndarray]] = {a: {} for a in CLASSES}
        subject: dict[str, np.ndarray] = {}
        for p in prompts:
            # A few images show no subject: they are kept in the file but left out of the fairness numbers.
            subject[p["id"]] = rng.random(n) > 0.08
            for attr, classes in CLASSES.items():
                named = p["named"].get(attr)
                probs[attr][p["id"]] = _probs(rng, n, lean if attr == "color" else lean / 2, len(classes),
                                              classes.index(named) if named else None)
            for i in range(n):
                row = {"method": method, "prompt_set": prompt_set, "prompt_id": p["id"], "prompt": p["text"], "index": i,
                       "seed": 1000 + i, "image_key": f"k{m_i}-{p['id']}-{i}", "image_sha256": f"{m_i:02d}{i:062d}",
                       f"{CLASSIFIER}/has_subject": bool(subject[p["id"]][i])}
                for attr, classes in CLASSES.items():
                    for k, cls in enumerate(classes):
                        row[f"{CLASSIFIER}/{attr}/{cls}"] = float(probs[attr][p["id"]][i, k])
                rows.append(row)
            # A "/" cannot be part of a sample file name, so such a method simply has no thumbnails.
            for i in range(2 if "/" not in method else 0):
                shade = int(255 * probs["color"][p["id"]][i, 0])
                (run_dir / "samples" / f"{method}__{prompt_set}__{p['id']}__{i}.png").write_bytes(_png((shade, 40, 255 - shade)))
        base = {"method": method, "prompt_set": prompt_set, "classifier": CLASSIFIER}
        kept = {a: {pid: x[subject[pid]] for pid, x in by_prompt.items()} for a, by_prompt in probs.items()}
        for attr, classes in CLASSES.items():
            named = {p["id"]: p["named"].get(attr) for p in prompts}
            for r in fairness_records(kept[attr], classes, named=named, n_boot=n_boot, seed=7):
                records.append({**base, "attribute": attr, **r})
        missing = {pid: (~m).astype(float) for pid, m in subject.items()}
        for r in mean_records(missing, "no_subject_rate", "detector", False, n_boot=n_boot, seed=7):
            records.append({**base, "attribute": None, **r})
        named_c = {p["id"]: p["named"].get("color") for p in prompts}
        named_s = {p["id"]: p["named"].get("shade") for p in prompts}
        for r in intersectional_records(kept["color"], kept["shade"], CLASSES["color"], CLASSES["shade"],
                                        named_a=named_c, named_b=named_s, n_boot=n_boot, seed=7):
            records.append({**base, "attribute": "color×shade", **r})
        fid, clip = (quality or {}).get(method, (10.0 + 20 * lean, 30.0 - 10 * lean))
        for metric, value, hib in (("fid", fid, False), ("clip_t", clip, True)):
            records.append({"method": method, "prompt_set": prompt_set, "prompt_id": None, "classifier": None,
                            "attribute": None, "metric": metric, "variant": "vs-reference" if metric == "fid" else "mean",
                            "value": value, "ci_low": value - 0.5, "ci_high": value + 0.5, "n": n * len(prompts),
                            "higher_is_better": hib})
        records.append({"method": method, "prompt_set": prompt_set, "prompt_id": None, "classifier": None,
                        "attribute": None, "metric": "unet_evals", "variant": "per-image", "value": 40.0 * (m_i + 1),
                        "ci_low": None, "ci_high": None, "n": 1, "higher_is_better": False})
    results = {
        "schema_version": 1,
        "run_id": run_id,
        "created": "2026-11-25T13:15:00Z",
        "config": {"profile": "world", "methods": [{"name": m} for m in methods], "prompt_sets": [prompt_set],
                   "seed": seed, "metrics": {"bootstrap": n_boot, "seed": 7}, **(extra_config or {})},
        "versions": {"python": "3.11.7", "numpy": np.__version__, "debias-bench": __version__},
        "models": {"base": {"name": "world", "fingerprint": "f" * 64},
                   "methods": {m: {"fingerprint": f"{i:064d}", "params": {}} for i, m in enumerate(methods)},
                   "classifiers": {CLASSIFIER: {"fingerprint": "c" * 64, "attributes": CLASSES}}},
        "prompt_sets": {prompt_set: {"fingerprint": "d" * 64, "attributes": list(CLASSES), "classes": CLASSES,
                                  "prompts": prompts}},
        "failures": [],
        "metrics": records,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    pd.DataFrame(rows).to_parquet(run_dir / "predictions.parquet", index=False)
    return run_dir
