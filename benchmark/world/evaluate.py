"""How faithfully the world generator reproduces the configured bias.

For each world prompt, ``n`` images are sampled (seeds from :func:`benchmark.seeding.image_seeds`)
through :func:`benchmark.sampling.sample`, classified by the world classifier (hard labels), and
the share of every attribute class is compared with the configured share, with a Wilson score 95 %
interval (Wilson 1927). Content accuracy is the share of images whose digit is the prompted one.
Agreement across prompts is Spearman's rank correlation between configured and measured shares.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from benchmark.components import Components, SamplerConfig
from benchmark.sampling import sample
from benchmark.seeding import image_seeds
from benchmark.world.config import DIGITS, WorldConfig
from benchmark.world.prompts import world_prompts, world_truth

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bias_table(components: Components, config: WorldConfig, classifier, n: int,
               sampler: SamplerConfig | None = None, base_seed: int = 1234, plain_only: bool = False,
               batch: int = 256, progress: bool = False) -> dict:
    """Rows (prompt, attribute, class, configured, measured, CI) plus per-prompt content accuracy."""
    sampler = sampler or components.sampler
    truth = world_truth(config)
    rows, content = [], {}
    prompts = [p for p in world_prompts(config) if not (plain_only and p.named)]
    for p in tqdm(prompts, desc=f"bias g={sampler.guidance_scale}", disable=not progress):
        seeds = image_seeds(base_seed, p.id, n)
        images = np.concatenate([sample(components, [p.text] * len(seeds[i: i + batch]), seeds[i: i + batch], sampler)
                                 for i in range(0, n, batch)])
        probs = classifier.predict(images)
        content[p.id] = float((probs["digit"].argmax(1) == DIGITS.index(p.content)).mean())
        for attr, labels in config.attributes.items():
            hard = probs[attr].argmax(1)
            for k, label in enumerate(labels):
                count = int((hard == k).sum())
                lo, hi = wilson(count, n)
                rows.append({"prompt": p.id, "named": bool(p.named), "attribute": attr, "class": label,
                             "configured": float(truth[p.id][attr][k]), "measured": count / n,
                             "ci_low": lo, "ci_high": hi})
    return {"guidance_scale": sampler.guidance_scale, "n": n, "rows": rows, "content_accuracy": content,
            "summary": summarize(rows, content)}


def summarize(rows: list[dict], content: dict[str, float]) -> dict:
    """Bar checks on the plain prompts: |measured - configured|, CI excluding the unbiased share,
    Spearman per attribute, content accuracy."""
    plain = [r for r in rows if not r["named"]]
    out: dict = {"content_accuracy_min": min(content.values()) if content else float("nan"),
                 "content_accuracy_mean": float(np.mean(list(content.values()))) if content else float("nan")}
    for attr in sorted({r["attribute"] for r in plain}):
        rs = [r for r in plain if r["attribute"] == attr]
        k = len({r["class"] for r in rs})
        conf = np.array([r["configured"] for r in rs])
        meas = np.array([r["measured"] for r in rs])
        # A share within 0.02 of uniform (e.g. 0.34/0.33/0.33) counts as unbiased.
        biased = [r for r in rs if abs(r["configured"] - 1 / k) > 0.02]
        excl = [(r["ci_low"] > 1 / k or r["ci_high"] < 1 / k) for r in biased]
        rho = spearmanr(conf, meas).statistic if len(rs) > 2 else float("nan")
        out[attr] = {
            "max_abs_error": float(np.max(np.abs(meas - conf))),
            "mean_abs_error": float(np.mean(np.abs(meas - conf))),
            "within_0.05": float(np.mean(np.abs(meas - conf) <= 0.05)),
            "biased_ci_excludes_uniform": float(np.mean(excl)) if excl else float("nan"),
            "spearman": float(rho),
        }
    named = [r for r in rows if r["named"]]
    if named:
        out["conditional_named_share"] = {r["prompt"]: r["measured"] for r in named if r["configured"] == 1.0}
    return out


def guidance_sweep(components: Components, config: WorldConfig, classifier, n: int,
                   scales: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0), progress: bool = False) -> list[dict]:
    """Bias reproduction on the plain prompts at several classifier-free guidance scales."""
    out = []
    for g in scales:
        table = bias_table(components, config, classifier, n, replace(components.sampler, guidance_scale=g),
                           plain_only=True, progress=progress)
        out.append({"guidance_scale": g, "n": n, "summary": table["summary"],
                    "measured": {f"{r['prompt']}/{r['attribute']}/{r['class']}": r["measured"] for r in table["rows"]}})
    return out


def format_table(table: dict) -> str:
    """Markdown table of configured vs measured shares, one row per (prompt, attribute, class)."""
    lines = ["| prompt | attribute | class | configured | measured | 95% CI | content acc |", "|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['prompt']} | {r['attribute']} | {r['class']} | {r['configured']:.2f} | {r['measured']:.3f} | "
                     f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {table['content_accuracy'][r['prompt']]:.3f} |")
    return "\n".join(lines)
